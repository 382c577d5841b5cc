//! Adversarial review of the data-moving tools: `Store::backup` / `annal
//! backup`, `annal export` / `annal import`, and `annal salvage` after
//! `annal repair`. Every test asserts a promise of docs/CLI.md (quoted in
//! a comment) or of the doc comments of the public API.
//!
//! It found (each fixed; the tests marked "Found" failed before):
//! `salvage_prints_an_event_whose_id_the_store_legitimately_holds_twice`
//! (salvage dropped a legitimately stored event whose id occurs twice),
//! `salvage_prints_no_event_that_was_never_appended` (salvage printed a
//! batch frame found inside a damaged event's payload as an event, and
//! repair counted it),
//! `an_import_torn_by_a_crash_inside_a_payload_holding_a_frame_can_be_run_again`
//! (same root cause: a torn final write was called corruption, exit 4).
//! The other tests are coverage.
#![cfg(feature = "cli")]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use annal::{EventData, ExpectedVersion, Options, ReadAll, Store, StreamAppend, Uuid};
use serde_json::Value;

mod cli_support;
use cli_support::*;

fn ok(args: &[&str]) -> Output {
    let o = run(args);
    assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
    o
}

/// The export of a store, as text (checked to be JSON lines).
fn export(dir: &Path) -> String {
    let o = ok(&["export", s(dir)]);
    json_lines(&o);
    stdout(&o)
}

/// Everything an event is made of, but its timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ev {
    position: u64,
    stream: String,
    version: u64,
    id: Uuid,
    event_type: String,
    schema_version: u16,
    data: Vec<u8>,
    metadata: Vec<u8>,
}

fn events_of(dir: &Path) -> Vec<Ev> {
    let store = Store::open(dir, Options::default().with_read_only(true)).unwrap();
    let events = store
        .read_all(ReadAll::forward())
        .unwrap()
        .collect_all()
        .unwrap()
        .iter()
        .map(|e| Ev {
            position: e.position(),
            stream: e.stream().to_string(),
            version: e.version(),
            id: e.id(),
            event_type: e.event_type().to_string(),
            schema_version: e.schema_version(),
            data: e.data().to_vec(),
            metadata: e.metadata().to_vec(),
        })
        .collect();
    store.close().unwrap();
    events
}

/// The events without their positions (which an import into a store
/// that is not empty shifts).
fn without_positions(events: &[Ev]) -> Vec<Ev> {
    events
        .iter()
        .map(|e| Ev {
            position: 0,
            ..e.clone()
        })
        .collect()
}

/// Flips one byte of `file` at the first occurrence of `marker`.
fn flip_at_marker(file: &Path, marker: &[u8]) {
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .unwrap_or_else(|| panic!("marker not in {}", file.display()));
    bytes[at] ^= 0x55;
    std::fs::write(file, bytes).unwrap();
}

fn segment(dir: &Path, n: u64) -> PathBuf {
    dir.join(annal::log::segment::file_name(n))
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------
// export / import
// ---------------------------------------------------------------------------

/// A store whose events are as unusual as the limits allow.
fn unusual_store(dir: &Path) {
    let store = Store::open(dir, Options::default()).unwrap();
    let max = annal::limits::EVENT_PAYLOAD_BYTES_MAX;
    let long_stream = "S".repeat(annal::limits::STREAM_NAME_BYTES_MAX);
    let long_type = "T".repeat(annal::limits::EVENT_TYPE_BYTES_MAX);
    // A stream name of 255 bytes made of 2-, 3- and 4-byte characters.
    let mut wide = String::new();
    for c in ['é', '€', '𝄞'].iter().cycle() {
        if wide.len() + c.len_utf8() > annal::limits::STREAM_NAME_BYTES_MAX {
            break;
        }
        wide.push(*c);
    }
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes();
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let streams = [
        "plain-1".to_string(),
        "with \"quotes\" and \\backslash\\".to_string(),
        "line\nbreak\r\ttab".to_string(),
        "nul\u{0}and\u{1f}ctl\u{7f}".to_string(),
        "\u{feff}bom-first".to_string(),
        "emoji-😀-\u{2028}-\u{2029}".to_string(),
        " spaced ".to_string(),
        "{\"stream\":\"x\"}".to_string(),
        long_stream.clone(),
        wide.clone(),
    ];
    let payloads: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (Vec::new(), Vec::new()),
        (binary.clone(), binary.clone()),
        (b"null".to_vec(), b"null".to_vec()),
        (
            b"{\"b\":1,   \"a\":[1.0e+10, -0, 1E300]}".to_vec(),
            b"{\"a\":1,\"a\":2}".to_vec(),
        ),
        (b" {}".to_vec(), b"{} ".to_vec()),
        (b"{\n}".to_vec(), b"\t[]".to_vec()),
        (br#""\ud800""#.to_vec(), br#""\udc00x""#.to_vec()),
        (br#""\ud83d\ude00 \u0000""#.to_vec(), b"\"\xe2\x80\xa8\"".to_vec()),
        (deep(126), deep(128)),
        (deep(500), b"\xff\xfe\xfd".to_vec()),
        (b"\xef\xbb\xbf{}".to_vec(), b"{}\n".to_vec()),
        (b"123456789012345678901234567890".to_vec(), b"true".to_vec()),
    ];
    for (i, stream) in streams.iter().enumerate() {
        for (j, (data, metadata)) in payloads.iter().enumerate() {
            let schema = [0u16, 1, 2, u16::MAX][(i + j) % 4];
            let event_type = if j % 3 == 0 {
                long_type.clone()
            } else {
                format!("Type\u{0}{j}")
            };
            let e = EventData::new(event_type, data.clone())
                .with_metadata(metadata.clone())
                .with_schema_version(schema);
            store.append(stream, ExpectedVersion::Any, [e]).unwrap();
        }
    }
    // Batches of several events and of several streams.
    let batch: Vec<EventData> = (0..50)
        .map(|k| EventData::new("InBatch", vec![k as u8; k]).with_schema_version(k as u16))
        .collect();
    store.append("batched", ExpectedVersion::NoStream, batch).unwrap();
    store
        .append_multi(&[
            StreamAppend::new("multi-a", ExpectedVersion::Any, vec![EventData::new("A", "1")]),
            StreamAppend::new("multi-b", ExpectedVersion::Any, vec![EventData::new("B", "\"2\"")]),
        ])
        .unwrap();
    // Events at the payload limit: data + metadata = 16 MiB exactly, as
    // binary (base64 in the export), as one JSON string, and split.
    let big_binary: Vec<u8> = (0..max).map(|k| (k * 7 % 251) as u8).collect();
    store
        .append(
            &long_stream,
            ExpectedVersion::Any,
            [EventData::new(long_type.clone(), big_binary)],
        )
        .unwrap();
    let mut big_json = vec![b'x'; max];
    big_json[0] = b'"';
    big_json[max - 1] = b'"';
    store
        .append(&wide, ExpectedVersion::Any, [EventData::new("BigJson", big_json)])
        .unwrap();
    let half = vec![0u8; max / 2];
    store
        .append(
            "big-split",
            ExpectedVersion::Any,
            [EventData::new("Split", half.clone()).with_metadata(half)],
        )
        .unwrap();
    store.close().unwrap();
}

/// CLI.md, export: "`annal export A | annal import B` gives B the same
/// events as A: same streams, versions, global positions, ids, types,
/// schema versions, data and metadata bytes. `annal export B` is then
/// byte-identical to `annal export A`." Exercised with binary, empty and
/// `null` payloads, JSON that is not embeddable (whitespace, unpaired
/// surrogates, 128+ levels), names with quotes, control characters, NUL,
/// a BOM, U+2028, 255-byte names of multi-byte characters, schema
/// versions 0 and 65535, batches, and events of exactly 16 MiB
/// (`limits::EVENT_PAYLOAD_BYTES_MAX`). Also checks that every export
/// line is one JSON object, as import lines are (Conventions).
#[test]
fn export_then_import_reproduces_unusual_events_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    unusual_store(&a);
    let text = export(&a);
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        assert!(v.is_object());
    }
    let o = run_with_stdin(&["import", s(&b)], text.as_bytes());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_lines(&o).len(), text.lines().count());
    let (ea, eb) = (events_of(&a), events_of(&b));
    assert_eq!(ea.len(), eb.len());
    for (x, y) in ea.iter().zip(&eb) {
        assert!(x == y, "event at position {} differs after export/import", x.position);
    }
    assert!(export(&b) == text, "export B is not byte-identical to export A");
    // A file argument instead of stdin, into a third store: the same.
    let file = dir.path().join("export.jsonl");
    std::fs::write(&file, &text).unwrap();
    let c = dir.path().join("c");
    ok(&["import", s(&c), s(&file)]);
    assert!(events_of(&c) == ea);
    // CLI.md, backup: "It is the same store (same store id) as of that
    // moment": the same events, 16 MiB batches included.
    let backup = dir.path().join("backup");
    ok(&["backup", s(&a), s(&backup)]);
    assert!(events_of(&backup) == ea);
    assert!(export(&backup) == text);
}

/// CLI.md, import, Failures: "every line before it is appended, made
/// durable and acknowledged, the line and everything after it are not,
/// and the message names the line", with the bad line past the first
/// 1,000-line sync group ("syncs once for all the lines read so far
/// whenever no further complete line is waiting in its input (and at
/// least every 1,000 lines)"), from a FILE (lines always waiting) and
/// from stdin.
#[test]
fn a_bad_line_after_thousands_of_lines_keeps_and_acknowledges_every_line_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    many_events_store(&a, 3000);
    let text = export(&a);
    let good: Vec<&str> = text.lines().collect();
    let source = events_of(&a);
    let mut input: String = good[..2500].iter().map(|l| format!("{l}\n")).collect();
    input.push_str("{\"stream\":\"s-1\",\"type\":\"T\",\"expected\":\"nope\"}\n");
    input.extend(good[2500..].iter().map(|l| format!("{l}\n")));
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, &input).unwrap();
    for (k, from_file) in [true, false].into_iter().enumerate() {
        let b = dir.path().join(format!("b{k}"));
        let o = if from_file {
            run(&["import", s(&b), s(&file)])
        } else {
            run_with_stdin(&["import", s(&b)], input.as_bytes())
        };
        assert_eq!(code(&o), 1, "{}", stderr(&o));
        assert!(stderr(&o).starts_with("annal: line 2501: "), "{}", stderr(&o));
        let results = json_lines(&o);
        assert_eq!(results.len(), 2500);
        assert_eq!(results[2499]["last_position"], 2500);
        assert!(events_of(&b) == source[..2500]);
    }
}

/// A store of `n` events over a few streams, some in batches, with binary
/// and JSON payloads, appended without a sync per append.
fn many_events_store(dir: &Path, n: usize) {
    let store = Store::open(
        dir,
        Options::default()
            .with_segment_size_bytes(256 * 1024)
            .with_durability(annal::Durability::Buffered),
    )
    .unwrap();
    let mut i = 0;
    while i < n {
        let k = if i % 7 == 0 { (n - i).min(5) } else { 1 };
        let events: Vec<EventData> = (i..i + k)
            .map(|j| {
                let data = if j % 2 == 0 {
                    format!("{{\"j\":{j}}}").into_bytes()
                } else {
                    vec![0xff, j as u8, 0]
                };
                EventData::new(format!("T{}", j % 3), data).with_metadata(if j % 5 == 0 {
                    b"m".to_vec()
                } else {
                    vec![]
                })
            })
            .collect();
        store
            .append(&format!("s-{}", i % 6), ExpectedVersion::Any, events)
            .unwrap();
        i += k;
    }
    store.close().unwrap();
}

/// CLI.md, import: "Re-running an interrupted import is safe when the
/// lines carry ids and exact expected versions (as `export` writes them):
/// a line that was already appended is an idempotent retry and writes
/// nothing again." The import is killed (SIGKILL) half-way, after some
/// results were acknowledged, with more than the 10,000-event id window
/// on either side; running it again, twice, gives exactly the source's
/// events, and `verify` finds no id stored twice. Also: "A caller that
/// sees the result line for line N knows lines 1..N are on stable
/// storage": every acknowledged line is in the store after the kill.
#[test]
fn an_import_killed_half_way_and_run_again_writes_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    many_events_store(&a, 24_000);
    let text = export(&a);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 24_000);

    let mut child = Command::new(BIN)
        .args(["import", s(&b)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let first: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(first.as_bytes());
        // Keep stdin open: the import waits for more input until killed.
        std::thread::sleep(std::time::Duration::from_secs(60));
        drop(stdin);
    });
    let mut results = BufReader::new(child.stdout.take().unwrap());
    let mut acknowledged = 0;
    let mut l = String::new();
    while acknowledged < 12_000 {
        l.clear();
        assert!(results.read_line(&mut l).unwrap() > 0, "import ended early");
        acknowledged += 1;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(writer);
    let after_kill = events_of(&b);
    assert!(after_kill.len() >= 12_000, "an acknowledged line is missing");
    let source = events_of(&a);
    assert!(after_kill[..] == source[..after_kill.len()], "a prefix of the source");

    for round in 0..2 {
        let o = run_with_stdin(&["import", s(&b)], text.as_bytes());
        assert_eq!(code(&o), 0, "round {round}: {}", stderr(&o));
        assert_eq!(json_lines(&o).len(), 24_000);
        let now = events_of(&b);
        assert_eq!(now.len(), source.len(), "round {round}: events written twice or lost");
        assert!(now == source, "round {round}: not the source's events");
    }
    let v = json_lines(&ok(&["verify", s(&b)]));
    assert_eq!(v[0]["duplicate_ids"], Value::Null);
    assert!(export(&b) == text);
}

/// CLI.md, import, Failures: a bad line "stops the import: every line
/// before it is appended, made durable and acknowledged, the line and
/// everything after it are not, and the message names the line"; "The
/// exit code is 3 for a wrong expected version, 5 for a locked store, 1
/// for anything else". Run again with the line fixed, the whole input
/// gives the source's events once (the lines before it are idempotent
/// retries).
#[test]
fn a_bad_line_half_way_names_the_line_and_keeps_every_line_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    many_events_store(&a, 12);
    let text = export(&a);
    let good: Vec<&str> = text.lines().collect();
    let source = events_of(&a);
    let nil = r#"{"stream":"x","type":"T","id":"00000000-0000-0000-0000-000000000000"}"#.to_string();
    let too_big = format!(
        r#"{{"stream":"x","type":"T","data_base64":"{}"}}"#,
        "A".repeat((annal::limits::EVENT_PAYLOAD_BYTES_MAX + 3) / 3 * 4)
    );
    let same_id_other_data = {
        let mut v: Value = serde_json::from_str(good[2]).unwrap();
        v["data"] = serde_json::json!([1]);
        v.to_string()
    };
    let long_stream = format!(r#"{{"stream":"{}","type":"T"}}"#, "s".repeat(256));
    let cases: Vec<(&str, Vec<u8>, i32)> = vec![
        ("invalid JSON", b"{\"stream\":".to_vec(), 1),
        ("not an object", b"[1]".to_vec(), 1),
        ("unknown key", br#"{"stream":"x","type":"T","colour":1}"#.to_vec(), 1),
        ("duplicate key", br#"{"stream":"x","type":"T","type":"U"}"#.to_vec(), 1),
        (
            "bad base64",
            br#"{"stream":"x","type":"T","data_base64":"%%"}"#.to_vec(),
            1,
        ),
        ("nil id", nil.into_bytes(), 1),
        ("empty stream", br#"{"stream":"","type":"T"}"#.to_vec(), 1),
        ("256-byte stream", long_stream.into_bytes(), 1),
        ("payload over the limit", too_big.into_bytes(), 1),
        ("not UTF-8", b"{\"stream\":\"\xff\",\"type\":\"T\"}".to_vec(), 1),
        (
            "wrong expected version",
            br#"{"stream":"s-0","type":"T","expected":99}"#.to_vec(),
            3,
        ),
        ("an id reused for other data", same_id_other_data.into_bytes(), 1),
    ];
    for (i, (what, bad, exit)) in cases.into_iter().enumerate() {
        let b = dir.path().join(format!("b{i}"));
        let mut input = Vec::new();
        for l in &good[..6] {
            input.extend_from_slice(l.as_bytes());
            input.push(b'\n');
        }
        input.extend_from_slice(&bad);
        input.push(b'\n');
        for l in &good[6..] {
            input.extend_from_slice(l.as_bytes());
            input.push(b'\n');
        }
        let o = run_with_stdin(&["import", s(&b)], &input);
        assert_eq!(code(&o), exit, "{what}: {}", stderr(&o));
        assert!(stderr(&o).starts_with("annal: line 7: "), "{what}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{what}: one sentence: {}", stderr(&o));
        assert_eq!(
            json_lines(&o).len(),
            6,
            "{what}: the 6 lines before it are acknowledged"
        );
        assert!(events_of(&b) == source[..6], "{what}: exactly the lines before it");

        // Fixed and run again: every event once.
        let fixed: String = good.iter().map(|l| format!("{l}\n")).collect();
        let o = run_with_stdin(&["import", s(&b)], fixed.as_bytes());
        assert_eq!(code(&o), 0, "{what}: {}", stderr(&o));
        assert!(events_of(&b) == source, "{what}: after the fixed run");
    }
}

// ---------------------------------------------------------------------------
// repair + salvage + import
// ---------------------------------------------------------------------------

/// CLI.md, salvage: "Prints every event still readable in the log bytes
/// quarantined ... as an import line, exactly as `export` would have
/// printed it"; "To append the events again: `annal salvage DIR | annal
/// import DIR`. ... the lines of streams that lost no event follow on and
/// are appended with their old versions, and running it again appends
/// nothing twice".
/// The damaged batch is the only event of its stream, so every other
/// stream follows on: after the import, the store holds every original
/// event but the damaged one, same ids, streams, versions, types, schema
/// versions and payloads, in order. Several segments, batches of several
/// events, binary payloads.
#[test]
fn repair_salvage_import_gives_back_every_event_but_the_damaged_batch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("store");
    let store = Store::open(&d, Options::default().with_segment_size_bytes(16 * 1024)).unwrap();
    let mut n = 0u64;
    let mut append = |stream: &str, k: usize, marker: Option<&str>| {
        let events: Vec<EventData> = (0..k)
            .map(|j| {
                n += 1;
                let data = match marker {
                    Some(m) => format!("{{\"marker\":\"{m}\"}}").into_bytes(),
                    None if n.is_multiple_of(3) => vec![0u8, 0xff, n as u8, 0],
                    None => format!("{{\"n\":{n}, \"pad\":\"{}\"}}", "p".repeat(60)).into_bytes(),
                };
                EventData::new(format!("T{j}"), data)
                    .with_metadata(if n.is_multiple_of(2) {
                        format!("{{\"m\":{n}}}").into_bytes()
                    } else {
                        vec![]
                    })
                    .with_schema_version((n % 3) as u16)
            })
            .collect();
        store.append(stream, ExpectedVersion::Any, events).unwrap();
    };
    for i in 0..150 {
        append(&format!("s-{}", i % 5), 1 + i % 3, None);
    }
    // The damaged batch: the only event of its stream, in segment 2 or later.
    append("victim", 1, Some("VICTIM-MARKER"));
    for i in 0..200 {
        append(&format!("s-{}", i % 5), 1 + i % 4, None);
    }
    store.close().unwrap();
    let original = events_of(&d);
    let victim = original.iter().position(|e| e.stream == "victim").unwrap();
    let seg = (1..)
        .map(|k| segment(&d, k))
        .find(|p| {
            let bytes = std::fs::read(p).unwrap();
            bytes.windows(13).any(|w| w == b"VICTIM-MARKER")
        })
        .unwrap();
    assert_ne!(seg, segment(&d, 1), "the damage is in the middle of the log");
    flip_at_marker(&seg, b"VICTIM-MARKER");

    let r = json_lines(&ok(&["repair", s(&d)]));
    assert_eq!(r[0]["kept_events"], victim as u64);
    assert_eq!(r[0]["quarantined_events"], (original.len() - victim - 1) as u64);

    let o = ok(&["salvage", s(&d)]);
    let salvaged = stdout(&o);
    json_lines(&o);
    assert_eq!(salvaged.lines().count(), original.len() - victim - 1);

    // Into the repaired store: every line follows on.
    let o = run_with_stdin(&["import", s(&d)], salvaged.as_bytes());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut expected = original.clone();
    expected.remove(victim);
    assert!(
        without_positions(&events_of(&d)) == without_positions(&expected),
        "the repaired store with the salvaged events is not the original without the damaged batch"
    );
    // Again: nothing twice.
    let o = run_with_stdin(&["import", s(&d)], stdout(&ok(&["salvage", s(&d)])).as_bytes());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(events_of(&d).len(), expected.len());
}

/// CLI.md, salvage: "Prints every event still readable in the log bytes
/// quarantined ... exactly as `export` would have printed it"; "An event
/// already printed (the same id, stream and version ...) is printed
/// once"; "the lines of streams that lost no event
/// follow on and are appended with their old versions".
///
/// A store can legitimately hold an id twice: CLI.md, verify,
/// `duplicate_ids`: "not damage (the store reads and appends as usual
/// ...), but the trace of retries that were not recognised (under
/// `any`/`exists`, a retry of an older append after later appends to its
/// stream and beyond the id window writes its events again)". Made here
/// with the default options. Both copies are in the one quarantined
/// tail of the damaged segment. `salvage` printed the second copy not at
/// all (it deduplicated by id alone), so that event was lost, and every
/// later line of its stream no longer followed on: the import stopped
/// with exit code 3 although the stream lost no event to the damage.
/// Found (fixed).
#[test]
fn salvage_prints_an_event_whose_id_the_store_legitimately_holds_twice() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("store");
    let store = Store::open(&d, Options::default()).unwrap();
    store
        .append(
            "victim",
            ExpectedVersion::NoStream,
            [EventData::new("V", "\"VICTIM-MARKER\"")],
        )
        .unwrap();
    let retried = EventData::new("Placed", "{\"sku\":1}");
    store.append("dup", ExpectedVersion::Any, [retried.clone()]).unwrap();
    store
        .append("dup", ExpectedVersion::Any, [EventData::new("Paid", "{}")])
        .unwrap();
    for _ in 0..11 {
        let filler: Vec<EventData> = (0..1000).map(|_| EventData::new("F", "{}")).collect();
        store.append("filler", ExpectedVersion::Any, filler).unwrap();
    }
    // A retry under Any beyond the window, after a later append to its
    // stream: written again, as documented.
    let again = store.append("dup", ExpectedVersion::Any, [retried]).unwrap();
    assert_eq!((again.first_version, again.first_position), (3, 11_004));
    store
        .append("dup", ExpectedVersion::Any, [EventData::new("Shipped", "{}")])
        .unwrap();
    store.close().unwrap();
    let v = json_lines(&ok(&["verify", s(&d)]));
    assert_eq!(v[0]["duplicate_ids"]["extra_events"], 1, "{}", v[0]);
    let exported: Vec<String> = export(&d).lines().map(String::from).collect();
    let original = events_of(&d);

    flip_at_marker(&segment(&d, 1), b"VICTIM-MARKER");
    let r = json_lines(&ok(&["repair", s(&d)]));
    assert_eq!(r[0]["kept_events"], 0);
    assert_eq!(r[0]["quarantined_events"], 11_004, "{}", r[0]);

    let o = ok(&["salvage", s(&d)]);
    let salvaged: Vec<String> = stdout(&o).lines().map(String::from).collect();
    assert!(
        salvaged == exported[1..],
        "salvage did not print every readable event as export printed it ({} lines, {} expected): {}",
        salvaged.len(),
        exported.len() - 1,
        stderr(&o)
    );
    let o = run_with_stdin(&["import", s(&d)], stdout(&ok(&["salvage", s(&d)])).as_bytes());
    assert_eq!(code(&o), 0, "stream 'dup' lost no event: {}", stderr(&o));
    assert!(without_positions(&events_of(&d)) == without_positions(&original[1..]));
}

/// CLI.md, salvage: "Prints every event still readable in the log bytes
/// quarantined ... exactly as `export` would have printed it: same id,
/// stream, type, payloads, schema version and the exact expected version
/// it was appended at. Only batches that pass every CRC check are read;
/// damaged stretches are skipped." An event's data is opaque bytes
/// (CLI.md: "The store keeps `data` and `metadata` as opaque bytes"),
/// so it may hold the bytes of a batch frame (here: a copy of another
/// store's log, archived as an event). When the batch holding that event
/// is damaged, salvage skipped into the damaged stretch looking for the
/// next valid frame (`segment::find_valid_batch`) and found the frame
/// inside the payload: it printed an event that this store never held,
/// with the other store's id, stream and position; `repair` counted it in
/// `quarantined_events` too. An import of the salvaged lines then
/// appended an event that never was.
/// Found (fixed).
#[test]
fn salvage_prints_no_event_that_was_never_appended() {
    let dir = tempfile::tempdir().unwrap();
    let frame = foreign_frame(dir.path());

    let d = dir.path().join("store");
    let store = Store::open(&d, Options::default()).unwrap();
    store
        .append("Order-1", ExpectedVersion::NoStream, [EventData::new("Placed", "{}")])
        .unwrap();
    let mut archived = b"ARCHIVE-MARKER".to_vec();
    archived.extend_from_slice(&frame);
    store
        .append(
            "Archive-1",
            ExpectedVersion::NoStream,
            [EventData::new("Archived", archived)],
        )
        .unwrap();
    store
        .append("Order-1", ExpectedVersion::Exact(1), [EventData::new("Paid", "{}")])
        .unwrap();
    store.close().unwrap();
    let exported: Vec<String> = export(&d).lines().map(String::from).collect();

    flip_at_marker(&segment(&d, 1), b"ARCHIVE-MARKER");
    let r = json_lines(&ok(&["repair", s(&d)]));
    assert_eq!(r[0]["kept_events"], 1);

    let o = ok(&["salvage", s(&d)]);
    for l in stdout(&o).lines() {
        assert!(
            exported.iter().any(|e| e == l),
            "salvage printed an event the store never held: {l}"
        );
    }
    assert_eq!(stdout(&o).lines().collect::<Vec<_>>(), [exported[2].as_str()]);
}

// ---------------------------------------------------------------------------
// backup
// ---------------------------------------------------------------------------

/// CLI.md, backup: "`backup` opens DIR read-only" and read-only opens
/// "stop before a torn final write and leave it"; "The backup holds the
/// segments up to the last event, an index file for exactly that log (its
/// first open replays nothing) ... It is the same store (same store id) as
/// of that moment." A store with a torn final write backs up to a store
/// that verifies clean (no torn tail), opens without replaying, holds the
/// source's events and id, and leaves the source's torn bytes in place.
#[test]
fn a_cli_backup_of_a_store_with_a_torn_tail_is_its_acknowledged_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("store");
    many_events_store(&d, 3000);
    // A last event whose bytes end in a non-zero byte, so that the log
    // ends at the last non-zero byte of the active segment.
    let store = Store::open(&d, Options::default().with_segment_size_bytes(256 * 1024)).unwrap();
    store
        .append("last", ExpectedVersion::Any, [EventData::new("Last", "{\"end\":1}")])
        .unwrap();
    store.close().unwrap();
    let before = events_of(&d);
    let text = export(&d);
    assert_eq!(json_lines(&ok(&["verify", s(&d)]))[0]["clean"], true);
    // A torn write after the last batch of the active segment: a frame's
    // magic and some of its bytes.
    let last = (1..).map(|k| segment(&d, k)).take_while(|p| p.exists()).last().unwrap();
    let mut torn = std::fs::read(&last).unwrap();
    let end = torn.iter().rposition(|&b| b != 0).unwrap() + 1;
    if torn.len() < end + 40 {
        torn.resize(end + 40, 0);
    }
    torn[end..end + 40].copy_from_slice(&[0x41; 40]);
    torn[end..end + 4].copy_from_slice(&0x3154_4241u32.to_le_bytes());
    std::fs::write(&last, &torn).unwrap();
    let v = json_lines(&ok(&["verify", s(&d)]));
    assert_ne!(v[0]["torn_tail"], Value::Null, "{}", v[0]);

    let dest = dir.path().join("backup");
    let o = ok(&["backup", s(&d), s(&dest)]);
    let summary = json_lines(&o);
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0]["last_position"], before.len() as u64);
    // `BackupReport`: "segments: Segment files copied", "bytes: Bytes
    // written: segments, index file, checkpoints and snapshots".
    let files: Vec<String> = entries(&dest);
    let segs = files.iter().filter(|f| f.ends_with(".seg")).count() as u64;
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(dest.join(f)).unwrap().len())
        .sum();
    assert_eq!(summary[0]["segments"], segs, "{files:?}");
    assert_eq!(summary[0]["bytes"], bytes, "{files:?}");
    assert!(!files.iter().any(|f| f.contains("partial")), "{files:?}");
    assert!(!entries(dir.path()).iter().any(|f| f.starts_with(".annal-backup-")));
    assert_eq!(std::fs::read(&last).unwrap(), torn, "the source is left as it was");
    let v = json_lines(&ok(&["verify", s(&dest)]));
    assert_eq!(v[0]["clean"], true, "{}", v[0]);
    assert_eq!(v[0]["torn_tail"], Value::Null, "{}", v[0]);
    assert_eq!(v[0]["index"]["covers"], before.len() as u64, "{}", v[0]);
    let store = Store::open(&dest, Options::default()).unwrap();
    assert_eq!(store.recovery_report().replayed_events, 0);
    assert!(store.recovery_report().index_loaded);
    assert_eq!(store.recovery_report().torn_tail_bytes, 0);
    store.close().unwrap();
    let src_id = json_lines(&ok(&["stats", s(&d)]))[0]["store_id"].clone();
    let dst_id = json_lines(&ok(&["stats", s(&dest)]))[0]["store_id"].clone();
    assert_eq!(src_id, dst_id);
    assert!(events_of(&dest) == before);
    assert!(export(&dest) == text);
}

/// CLI.md, backup: DEST "must not lie inside DIR, where losing the store's
/// directory would take the backup with it (exit code 1 otherwise,
/// nothing written)". Spelled every way: directly, through `..`, through
/// a link whose target is inside the store, inside `quarantine/`, and
/// with DIR itself given through a link. Nothing written: no DEST, and no
/// temporary `.annal-backup-*` directory anywhere.
#[test]
fn a_backup_inside_the_store_is_refused_however_it_is_spelled() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("store");
    many_events_store(&d, 50);
    std::fs::create_dir(d.join("quarantine")).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    let link_in = dir.path().join("link-into-store");
    std::os::unix::fs::symlink(d.join("sub"), &link_in).unwrap();
    let store_link = dir.path().join("store-link");
    std::os::unix::fs::symlink(&d, &store_link).unwrap();
    std::fs::create_dir(dir.path().join("other")).unwrap();
    let before_top = entries(dir.path());
    let before_store = entries(&d);
    let cases: Vec<(PathBuf, PathBuf)> = vec![
        (d.clone(), d.join("b")),
        (d.clone(), d.join("sub/../b")),
        (d.clone(), dir.path().join("other/../store/b")),
        (d.clone(), link_in.join("b")),
        (d.clone(), d.join("quarantine/b")),
        (store_link.clone(), d.join("b")),
        (d.clone(), store_link.join("sub/b")),
    ];
    for (src, dest) in cases {
        let o = run(&["backup", s(&src), s(&dest)]);
        assert_eq!(code(&o), 1, "{} -> {}: {}", src.display(), dest.display(), stderr(&o));
        assert!(stdout(&o).is_empty());
        assert!(!dest.exists(), "{}", dest.display());
        assert_eq!(entries(dir.path()), before_top);
        assert_eq!(entries(&d), before_store);
        assert!(entries(&d.join("sub")).is_empty());
        assert!(entries(&d.join("quarantine")).is_empty());
    }
}

/// CLI.md, backup: "Every batch is CRC-checked on the way ...; damage
/// stops the backup with exit code 4, and nothing is copied"; "a failed
/// backup removes its temporary directory". The damage is more than
/// 10,000 events before the end, where the read-only open does not look
/// (CLI.md, "What an open checks"), so only the backup's own checks find
/// it.
#[test]
fn a_backup_of_damage_the_open_does_not_see_exits_4_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("store");
    let store = Store::open(&d, Options::default().with_segment_size_bytes(64 * 1024)).unwrap();
    store
        .append("early", ExpectedVersion::Any, [EventData::new("E", "\"EARLY-MARKER\"")])
        .unwrap();
    for _ in 0..12 {
        let batch: Vec<EventData> = (0..1000).map(|i| EventData::new("F", format!("{i}"))).collect();
        store.append("filler", ExpectedVersion::Any, batch).unwrap();
    }
    store.close().unwrap();
    flip_at_marker(&segment(&d, 1), b"EARLY-MARKER");
    ok(&["stats", s(&d)]);
    let before = entries(dir.path());
    let dest = dir.path().join("backup");
    let o = run(&["backup", s(&d), s(&dest)]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
    assert!(stderr(&o).contains("00000000000000000001.seg"), "{}", stderr(&o));
    assert!(!dest.exists());
    assert_eq!(entries(dir.path()), before, "a temporary directory was left");
}

/// `Store::backup` doc: "Appends may go on meanwhile: the backup holds
/// every event published when it started, and none after"; CLI.md: "an
/// index file for exactly that log (its first open replays nothing)". A
/// backup taken while another thread appends (in batches, over many
/// segments) opens with its index file loaded, replays nothing, verifies
/// clean with the index agreeing, and holds exactly the source's first
/// `last_position` events. Several backups in a row.
#[test]
fn backups_taken_during_appends_are_prefixes_whose_index_needs_no_replay() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("store");
    let store = std::sync::Arc::new(
        Store::open(
            &d,
            Options::default()
                .with_segment_size_bytes(16 * 1024)
                .with_durability(annal::Durability::Buffered),
        )
        .unwrap(),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let k = 1 + (i % 4) as usize;
                let events: Vec<EventData> = (0..k)
                    .map(|j| EventData::new("E", format!("{{\"i\":{i},\"j\":{j}}}")))
                    .collect();
                store
                    .append(&format!("w-{}", i % 3), ExpectedVersion::Any, events)
                    .unwrap();
                i += 1;
            }
        })
    };
    let mut reports = Vec::new();
    for k in 0..6 {
        std::thread::sleep(std::time::Duration::from_millis(30));
        let dest = dir.path().join(format!("b{k}"));
        reports.push((dest.clone(), store.backup(&dest).unwrap()));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let store = std::sync::Arc::try_unwrap(store).ok().unwrap();
    store.close().unwrap();
    let source = events_of(&d);
    for (dest, report) in reports {
        let v = json_lines(&ok(&["verify", s(&dest)]));
        assert_eq!(v[0]["clean"], true, "{}", v[0]);
        assert_eq!(v[0]["index"]["status"], "agrees", "{}", v[0]);
        assert_eq!(v[0]["events"], report.last_position, "{}", v[0]);
        let b = Store::open(&dest, Options::default()).unwrap();
        assert!(b.recovery_report().index_loaded);
        assert_eq!(b.recovery_report().replayed_events, 0);
        b.close().unwrap();
        let events = events_of(&dest);
        assert_eq!(events.len() as u64, report.last_position);
        assert!(events[..] == source[..events.len()], "not a prefix of the source");
    }
}

/// The bytes of the batch frame of another store's first append (one
/// event of stream `Phantom-1`).
fn foreign_frame(dir: &Path) -> Vec<u8> {
    let other = dir.join("other-store");
    let o = Store::open(&other, Options::default()).unwrap();
    o.append(
        "Phantom-1",
        ExpectedVersion::NoStream,
        [EventData::new("Ghost", "{\"boo\":1}")],
    )
    .unwrap();
    o.close().unwrap();
    let seg = std::fs::read(segment(&other, 1)).unwrap();
    let frame_len = u32::from_le_bytes(seg[68..72].try_into().unwrap()) as usize;
    seg[64..64 + frame_len].to_vec()
}

/// CLI.md, Opening a store: "`append` and `import` open it as the
/// library's `Store::open` does: they cut a torn final write left by a
/// crash (after copying its bytes to `DIR/quarantine/...`; a warning on
/// stderr says which)"; verify: a torn tail "is what a crash during a
/// write leaves; it was never acknowledged, is **not corruption**, and the
/// next open of the store cuts it". So an import interrupted by a crash
/// can be run again. docs/DURABILITY.md models exactly this crash:
/// "a prefix of them in issue order, such a prefix plus the next write
/// torn at a random byte".
///
/// Here the last append (an import line whose data is opaque bytes that
/// happen to hold a batch frame, e.g. an archived copy of another store's
/// log) was torn by a crash: its first pages reached the disk, its last
/// page did not. Open's tail check (`classify_tail` in src/log/segment.rs)
/// searched the torn bytes for a later valid frame with
/// `find_valid_batch`, found the one inside the payload, and called the
/// torn write corruption: the re-run import (and every other command)
/// failed with exit code 4 instead of cutting the torn write.
/// Found (fixed; same root cause as
/// `salvage_prints_no_event_that_was_never_appended`).
#[test]
fn an_import_torn_by_a_crash_inside_a_payload_holding_a_frame_can_be_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let frame = foreign_frame(dir.path());
    let d = dir.path().join("store");
    let mut data = b"ARCHIVE-MARKER".to_vec();
    data.extend_from_slice(&frame);
    data.extend(std::iter::repeat_n(b'x', 3 * 4096));
    let first =
        r#"{"stream":"Order-1","type":"Placed","id":"7b0c5b5e-5d55-4b8e-9d1f-4b7f6f0f6a01","expected":"no-stream"}"#;
    let archive = format!(
        r#"{{"stream":"Archive-1","type":"Archived","id":"7b0c5b5e-5d55-4b8e-9d1f-4b7f6f0f6a02","expected":"no-stream","data_base64":"{}"}}"#,
        base64_encode(&data)
    );
    let input = format!("{first}\n{archive}\n");
    // A first import, closed: its index file covers the first line.
    let o = run_with_stdin(&["import", s(&d)], format!("{first}\n").as_bytes());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let index = std::fs::read(d.join("index")).unwrap();
    // The second line's import, crashed while writing: the index file is
    // still the one before it (the index is saved when the store closes),
    // and the append's last page never reached the disk.
    let o = run_with_stdin(&["import", s(&d)], format!("{archive}\n").as_bytes());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    std::fs::write(d.join("index"), &index).unwrap();
    let seg = segment(&d, 1);
    let mut bytes = std::fs::read(&seg).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    for b in &mut bytes[end - 4096..end] {
        *b = 0;
    }
    std::fs::write(&seg, &bytes).unwrap();
    // Without the payload's frame, the same tear is a torn tail.
    let plain = dir.path().join("plain");
    copy_dir(&d, &plain);
    let mut p = bytes.clone();
    let at = p.windows(14).position(|w| w == b"ARCHIVE-MARKER").unwrap() + 14;
    p[at..at + 4].copy_from_slice(b"XXXX");
    std::fs::write(segment(&plain, 1), &p).unwrap();
    let v = json_lines(&ok(&["verify", s(&plain)]));
    assert_ne!(v[0]["torn_tail"], Value::Null, "{}", v[0]);

    // Run again: the first line is an idempotent retry, the torn one is
    // appended anew.
    let o = run_with_stdin(&["import", s(&d)], input.as_bytes());
    assert_eq!(code(&o), 0, "the torn write was not cut: {}", stderr(&o));
    assert!(stderr(&o).contains("warning: cut a torn final write"), "{}", stderr(&o));
    let events = events_of(&d);
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].data, data);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Standard base64 with padding (the import's `data_base64`).
fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 { T[n as usize & 63] as char } else { '=' });
    }
    out
}

/// `Store::backup` doc: "the backup holds every event published when it
/// started, and none after; its checkpoints and snapshots are the ones
/// saved by then. Open it like any store." CLI.md, verify: a checkpoint
/// past the log's end, or a snapshot of a version past its stream's
/// events, is corruption. Checkpoints and snapshots are saved at the
/// latest position/version while another thread appends and backups are
/// taken: every backup verifies clean (checkpoints and snapshots
/// included), its checkpoints are at or before its last event, its
/// snapshots load, and it takes appends.
#[test]
fn backups_with_checkpoints_and_snapshots_saved_meanwhile_are_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("store");
    let store = std::sync::Arc::new(
        Store::open(
            &d,
            Options::default()
                .with_segment_size_bytes(16 * 1024)
                .with_durability(annal::Durability::Buffered),
        )
        .unwrap(),
    );
    store
        .append("w-0", ExpectedVersion::Any, [EventData::new("E", "{}")])
        .unwrap();
    // One of each before the backups start, so that every backup holds
    // both files.
    store.checkpoints().save("reader", 1).unwrap();
    store.save_snapshot("w-0", 1, 1, b"state at 1").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                store
                    .append(
                        &format!("w-{}", i % 2),
                        ExpectedVersion::Any,
                        [EventData::new("E", format!("{i}"))],
                    )
                    .unwrap();
                i += 1;
            }
        })
    };
    let saver = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let last = store.last_position();
                store.checkpoints().save("reader", last).unwrap();
                let v = store.stream_version("w-0").unwrap();
                store
                    .save_snapshot("w-0", v, 1, format!("state at {v}").as_bytes())
                    .unwrap();
            }
        })
    };
    let mut backups = Vec::new();
    for k in 0..8 {
        std::thread::sleep(std::time::Duration::from_millis(25));
        let dest = dir.path().join(format!("b{k}"));
        let report = store.backup(&dest).unwrap();
        backups.push((dest, report));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    saver.join().unwrap();
    std::sync::Arc::try_unwrap(store).ok().unwrap().close().unwrap();
    let source = events_of(&d);
    for (dest, report) in backups {
        let v = json_lines(&ok(&["verify", s(&dest)]));
        assert_eq!(v[0]["clean"], true, "{}", v[0]);
        assert_eq!(v[0]["checkpoints"]["status"], "clean", "{}", v[0]);
        assert_eq!(v[0]["snapshots"]["status"], "clean", "{}", v[0]);
        let b = Store::open(&dest, Options::default()).unwrap();
        assert_eq!(b.last_position(), report.last_position);
        if let Some(p) = b.checkpoints().load("reader").unwrap() {
            assert!(p <= report.last_position);
        }
        assert!(b.snapshot_issues().is_empty(), "{:?}", b.snapshot_issues());
        b.append("after-backup", ExpectedVersion::NoStream, [EventData::new("E", "{}")])
            .unwrap();
        b.close().unwrap();
        let events = events_of(&dest);
        assert!(events[..events.len() - 1] == source[..events.len() - 1]);
        let v = json_lines(&ok(&["verify", s(&dest)]));
        assert_eq!(v[0]["clean"], true, "{}", v[0]);
    }
}

/// CLI.md, repair step 1 and 3: a segment header damaged beyond bit rot
/// (more than 8 bits) is not rebuilt: "when the damage is in a segment's
/// header, that segment moves whole too", with every later one. Salvage:
/// a `.seg` file "is a whole segment (its frames start after the 64-byte
/// header)"; "Files are read in log order"; lines "exactly as `export`
/// would have printed it"; "the lines of streams that lost no event
/// follow on and are appended with their old versions". No event was
/// lost here (only header bytes), so `salvage | import` into the
/// repaired store gives back the original store's export byte for byte
/// (positions too: the events are appended right after the kept log).
#[test]
fn a_header_damaged_beyond_rebuild_loses_no_event_through_salvage_and_import() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("store");
    let store = Store::open(
        &d,
        Options::default()
            .with_segment_size_bytes(16 * 1024)
            .with_durability(annal::Durability::Buffered),
    )
    .unwrap();
    for i in 0..400u64 {
        let k = 1 + (i % 3) as usize;
        let events: Vec<EventData> = (0..k)
            .map(|j| {
                EventData::new("T", format!("{{\"i\":{i},\"j\":{j},\"pad\":\"{}\"}}", "p".repeat(50)))
                    .with_metadata(if i % 2 == 0 { vec![0u8, 1, 2] } else { vec![] })
            })
            .collect();
        store
            .append(&format!("s-{}", i % 7), ExpectedVersion::Any, events)
            .unwrap();
    }
    store.close().unwrap();
    let original = export(&d);
    let seg3 = segment(&d, 3);
    assert!(segment(&d, 5).exists());
    let mut bytes = std::fs::read(&seg3).unwrap();
    for b in &mut bytes[48..60] {
        *b ^= 0xff;
    }
    std::fs::write(&seg3, &bytes).unwrap();
    let o = run(&["repair", s(&d)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = &json_lines(&o)[0];
    assert_eq!(r["headers_rebuilt"], serde_json::json!([]), "{r}");
    let kept = r["kept_events"].as_u64().unwrap() as usize;
    assert_eq!(
        kept + r["quarantined_events"].as_u64().unwrap() as usize,
        original.lines().count(),
        "{r}"
    );

    let salvaged = stdout(&ok(&["salvage", s(&d)]));
    assert!(
        salvaged.lines().collect::<Vec<_>>() == original.lines().skip(kept).collect::<Vec<_>>(),
        "salvage is not the export's lines after the kept log"
    );
    // Into a new store, the first line (of a stream whose earlier events
    // were kept) does not follow on: CLI.md, salvage ("no longer follows
    // on: the import stops there with exit code 3"), and Conventions ("an
    // input refused at its first line creates nothing").
    let fresh = dir.path().join("fresh");
    let o = run_with_stdin(&["import", s(&fresh)], salvaged.as_bytes());
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("annal: line 1: wrong expected version"),
        "{}",
        stderr(&o)
    );
    assert!(!fresh.exists());
    let o = run_with_stdin(&["import", s(&d)], salvaged.as_bytes());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        export(&d) == original,
        "salvage | import did not give back the original store"
    );
    assert_eq!(json_lines(&ok(&["verify", s(&d)]))[0]["clean"], true);
}

/// CLI.md, repair step 2: the damaged segment's bytes are copied "from
/// the damaged batch on (up to the end of its last valid batch or its last
/// non-zero byte, whichever comes later)"; salvage prints "every event
/// still readable ... exactly as `export` would have printed it", and
/// `salvage | import` appends them again. With events at the payload limit
/// (16 MiB: binary, one JSON string, and all zeros as the log's last
/// event, whose bytes end in 16 MiB of zeros), empty data, and the
/// `null` metadata: every event after the damaged batch comes back exactly.
#[test]
fn salvage_and_import_give_back_events_at_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("store");
    let max = annal::limits::EVENT_PAYLOAD_BYTES_MAX;
    let store = Store::open(&d, Options::default()).unwrap();
    let add = |stream: &str, e: EventData| {
        store.append(stream, ExpectedVersion::Any, [e]).unwrap();
    };
    add("a-1", EventData::new("Small", "{}"));
    add("victim", EventData::new("V", "\"VICTIM-MARKER\""));
    let binary: Vec<u8> = (0..max).map(|k| (k * 31 % 253) as u8).collect();
    add("a-1", EventData::new("Binary", binary));
    let mut json = vec![b'y'; max - 4];
    json[0] = b'"';
    json[max - 5] = b'"';
    add("a-2", EventData::new("Json", json).with_metadata(b"null".to_vec()));
    add("a-1", EventData::new("Empty", Vec::new()).with_schema_version(0));
    add("a-3", EventData::new("Zeros", vec![0u8; max]));
    store.close().unwrap();
    let original = events_of(&d);
    let exported: Vec<String> = export(&d).lines().map(String::from).collect();

    flip_at_marker(&segment(&d, 1), b"VICTIM-MARKER");
    let r = json_lines(&ok(&["repair", s(&d)]));
    assert_eq!(r[0]["kept_events"], 1, "{}", r[0]);
    assert_eq!(r[0]["quarantined_events"], 4, "{}", r[0]);
    let o = ok(&["salvage", s(&d)]);
    json_lines(&o);
    let salvaged = stdout(&o);
    assert!(salvaged.lines().collect::<Vec<_>>() == exported[2..].iter().map(String::as_str).collect::<Vec<_>>());
    let o = run_with_stdin(&["import", s(&d)], salvaged.as_bytes());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut expected = original;
    expected.remove(1);
    assert!(without_positions(&events_of(&d)) == without_positions(&expected));
}
