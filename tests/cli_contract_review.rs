//! Adversarial review of the `annal` command line against its documented
//! contract (docs/CLI.md, README.md, `annal --help`), aimed at what
//! tests/cli.rs, tests/cli_kill.rs, tests/tools_review.rs and
//! tests/contract_review.rs leave out: locks held by another `annal`
//! process or by `flock` on the directory, closed output pipes, stale
//! index and temporary files left by the reading commands, the edges of
//! `read`/`read-all` options (0, past the end, `u64::MAX`), the exact keys
//! of every JSON output, damage in the id window for every command, a
//! checkpoint past the log end to end, racing appends creating one store,
//! awkward store paths and input line endings.
//!
//! Each test asserts one promise, quoted in a comment. Three failed on the
//! binary as reviewed and were fixed:
//! `a_repair_whose_summary_cannot_be_written_still_says_what_it_did`,
//! `append_takes_a_negative_number_as_its_data_or_metadata` and
//! `an_import_line_that_is_not_json_by_rfc_8259_is_refused`; so were
//! `verify_reports_damage_even_when_its_report_cannot_be_written` and
//! `data_base64_takes_base64_output_wrapped_in_lines`, added with them.
#![cfg(feature = "cli")]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use annal::{EventData, ExpectedVersion, Options, Store};
use serde_json::Value;

mod cli_support;
use cli_support::*;

fn ok(args: &[&str]) -> Vec<Value> {
    let o = run(args);
    assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
    json_lines(&o)
}

/// Imports `lines` (JSON lines) into `dir` through the CLI.
fn import(dir: &Path, lines: &str) {
    let o = run_with_stdin(&["import", s(dir)], lines.as_bytes());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// A store of three events, the second holding `MARK-2` in its data.
fn three(dir: &Path) {
    import(
        dir,
        concat!(
            "{\"stream\":\"a-1\",\"type\":\"T\",\"data\":{\"m\":\"MARK-1\"}}\n",
            "{\"stream\":\"a-2\",\"type\":\"T\",\"data\":{\"m\":\"MARK-2\"}}\n",
            "{\"stream\":\"a-1\",\"type\":\"U\",\"data\":{\"m\":\"MARK-3\"}}\n",
        ),
    );
}

fn segment(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.seg"))
}

/// Flips one bit of the first occurrence of `marker` in segment 1.
fn flip(dir: &Path, marker: &[u8]) {
    let p = segment(dir, 1);
    let mut bytes = std::fs::read(&p).unwrap();
    let at = bytes.windows(marker.len()).position(|w| w == marker).unwrap();
    bytes[at] ^= 1;
    std::fs::write(&p, bytes).unwrap();
}

/// Writes junk after the last batch of segment 1 (a torn final write).
fn tear(dir: &Path) {
    let p = segment(dir, 1);
    let mut bytes = std::fs::read(&p).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    bytes[end + 3..end + 10].copy_from_slice(b"garbage");
    std::fs::write(&p, bytes).unwrap();
}

/// Every file under `dir` with its length and CRC (sorted by path).
fn contents(dir: &Path) -> Vec<(PathBuf, usize, u32)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.push((p, bytes.len(), crc32fast::hash(&bytes)));
            }
        }
    }
    out.sort();
    out
}

/// [`contents`] but the `LOCK` file, which a writing command rewrites
/// (with its process id) when it takes the lock.
fn contents_but_lock(dir: &Path) -> Vec<(PathBuf, usize, u32)> {
    let lock = dir.join("LOCK");
    contents(dir).into_iter().filter(|(p, _, _)| *p != lock).collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

fn sorted(list: &[&str]) -> Vec<String> {
    let mut k: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    k.sort();
    k
}

fn positions(v: &[Value]) -> Vec<u64> {
    v.iter().map(|e| e["position"].as_u64().unwrap()).collect()
}

fn versions(v: &[Value]) -> Vec<u64> {
    v.iter().map(|e| e["version"].as_u64().unwrap()).collect()
}

// ------------------------------------------------------------------ repair

/// CLI.md, `repair`: "It prints: {...} and on stderr `annal: kept 1 event;
/// moved 1 event (214 bytes, 74 of them unreadable) into broken/quarantine`".
/// When the JSON summary cannot be written (stdout on a full disk), the
/// repair has been made all the same, but the command returns before its
/// stderr lines: the user sees only "writing the output: No space left on
/// device" and exit 1, and cannot tell that the store was changed (a second
/// `repair` then says "no damage found"). `append`, `import` and `backup`
/// each say what was done when their output fails; `repair` should too.
/// FAILS on the reviewed binary.
#[cfg(target_os = "linux")]
#[test]
fn a_repair_whose_summary_cannot_be_written_still_says_what_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("broken");
    three(&d);
    flip(&d, b"MARK-2");
    let o = run_into_full_disk(&["repair", s(&d)]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    // The repair was made:
    assert!(d.join("quarantine").is_dir());
    assert_eq!(ok(&["read-all", s(&d)]).len(), 1);
    // ... and stderr must say so.
    let err = stderr(&o);
    assert!(
        err.contains("kept 1 event") && err.contains("quarantine"),
        "the repair was made but stderr does not say so: {err:?}"
    );
}

/// CLI.md, Conventions: a command run on a store "that another process
/// has open for writing fails with exit code 5", each after trying again
/// for 250 ms; `salvage` "takes no lock". Here the writer is another
/// `annal` process (an `import` waiting for its next line), not the
/// library in the test's own process.
#[test]
fn an_import_in_progress_locks_out_every_command_but_salvage() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("st");
    three(&d);
    let mut child: Child = Command::new(BIN)
        .args(["import", s(&d)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"{\"stream\":\"b-1\",\"type\":\"T\"}\n").unwrap();
    input.flush().unwrap();
    let mut results = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    results.read_line(&mut first).unwrap();
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["first_position"], 4, "the import's store is open now");
    let backup = dir.path().join("copy");
    for args in [
        vec!["append", s(&d), "c-1", "T"],
        vec!["read", s(&d), "a-1"],
        vec!["read-all", s(&d)],
        vec!["export", s(&d)],
        vec!["stats", s(&d)],
        vec!["streams", s(&d)],
        vec!["verify", s(&d)],
        vec!["repair", s(&d)],
        vec!["backup", s(&d), s(&backup)],
    ] {
        let o = run(&args);
        assert_eq!(code(&o), 5, "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{args:?} printed while locked out");
        assert!(stderr(&o).starts_with("annal: "), "{args:?}: {}", stderr(&o));
    }
    assert!(!backup.exists(), "a locked-out backup made its DEST");
    let o = run(&["salvage", s(&d)]);
    assert_eq!(code(&o), 0, "salvage takes no lock: {}", stderr(&o));
    drop(input);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(ok(&["read-all", s(&d)]).len(), 4, "only the import appended");
}

/// CLI.md, Locking: "a script that serialises its commands with `flock DIR
/// ...` on the store directory itself locks the store out (exit 5)"; a
/// shared lock on it still lets the reading commands in, not a writer.
#[cfg(target_os = "linux")]
#[test]
fn flock_on_the_store_directory_locks_the_store_out() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("st");
    three(&d);
    let handle = std::fs::File::open(&d).unwrap();
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(handle.as_raw_fd(), libc::LOCK_EX) }, 0);
    for args in [vec!["stats", s(&d)], vec!["append", s(&d), "a-1", "T"]] {
        let o = run(&args);
        assert_eq!(code(&o), 5, "{args:?}: {}", stderr(&o));
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::flock(handle.as_raw_fd(), libc::LOCK_SH) }, 0);
    assert_eq!(ok(&["stats", s(&d)])[0]["events"], 3, "readers share a shared lock");
    let o = run(&["append", s(&d), "a-1", "T"]);
    assert_eq!(code(&o), 5, "a writer waits for the readers: {}", stderr(&o));
    drop(handle);
    ok(&["append", s(&d), "a-1", "T"]);
}

// ------------------------------------------------------ read-only opening

/// CLI.md, Opening a store: the reading commands "write nothing ... they
/// stop before a torn final write and leave it (and a stale `index` file)
/// for the next writing open"; `append` and `import` "rebuild or refresh
/// the `index` file".
#[test]
fn reading_commands_leave_a_stale_index_and_a_writing_open_refreshes_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("st");
    ok(&["append", s(&d), "a-1", "T"]);
    let old_index = std::fs::read(d.join("index")).unwrap();
    ok(&["append", s(&d), "a-1", "T"]);
    ok(&["append", s(&d), "b-1", "T"]);
    std::fs::write(d.join("index"), &old_index).unwrap();
    let before = contents(&d);
    let stats = &ok(&["stats", s(&d)])[0];
    assert_eq!(stats["events"], 3);
    assert_eq!(stats["open"]["index_loaded"], true);
    assert_eq!(stats["open"]["replayed_events"], 2, "{stats}");
    assert_eq!(ok(&["read-all", s(&d)]).len(), 3);
    assert_eq!(ok(&["read", s(&d), "a-1"]).len(), 2);
    assert_eq!(ok(&["export", s(&d)]).len(), 3);
    assert_eq!(ok(&["streams", s(&d)]).len(), 2);
    let v = &ok(&["verify", s(&d)])[0];
    assert_eq!(v["index"], serde_json::json!({"status":"agrees","covers":1}));
    let copy = dir.path().join("copy");
    ok(&["backup", s(&d), s(&copy)]);
    assert_eq!(contents(&d), before, "a reading command changed the store");
    // The backup's index covers its whole log.
    assert_eq!(ok(&["stats", s(&copy)])[0]["open"]["replayed_events"], 0);
    ok(&["append", s(&d), "c-1", "T"]);
    assert_eq!(
        ok(&["stats", s(&d)])[0]["open"]["replayed_events"],
        0,
        "append refreshed the index"
    );
}

/// CLI.md, Opening a store: `append` and `import` "remove the temporary
/// files the store was writing when it stopped (`N.seg.tmp`,
/// `next-segment.tmp`, `index.tmp`, `checkpoints.tmp`, `snapshots.tmp`;
/// other files in DIR are left alone)"; the reading commands write nothing.
#[test]
fn only_a_writing_open_removes_the_documented_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("st");
    three(&d);
    let ours = [
        "00000000000000000002.seg.tmp",
        "next-segment.tmp",
        "index.tmp",
        "checkpoints.tmp",
        "snapshots.tmp",
    ];
    let foreign = ["foo.tmp", "notes.txt", "2.seg.tmp", "index.tmp.bak"];
    for f in ours.iter().chain(&foreign) {
        std::fs::write(d.join(f), b"junk").unwrap();
    }
    let before = names(&d);
    for args in [
        vec!["stats", s(&d)],
        vec!["read-all", s(&d)],
        vec!["export", s(&d)],
        vec!["streams", s(&d)],
        vec!["verify", s(&d)],
    ] {
        ok(&args);
    }
    ok(&["backup", s(&d), s(&dir.path().join("copy"))]);
    assert_eq!(names(&d), before, "a reading command removed a file");
    ok(&["append", s(&d), "a-1", "T"]);
    let after = names(&d);
    for f in ours {
        assert!(!after.contains(&f.to_string()), "{f} left after a writing open");
    }
    for f in foreign {
        assert!(after.contains(&f.to_string()), "{f} removed by a writing open");
    }
}

/// CLI.md, Locking: "(A directory without a `LOCK` file, which only a store
/// never opened for writing lacks, is read under the directory's lock
/// alone.)"; the reading commands, `verify` and `salvage` write nothing.
#[test]
fn reading_a_store_without_a_lock_file_creates_nothing_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("st");
    three(&d);
    tear(&d);
    std::fs::remove_file(d.join("LOCK")).unwrap();
    let before = contents(&d);
    for args in [
        vec!["stats", s(&d)],
        vec!["read-all", s(&d)],
        vec!["read", s(&d), "a-1"],
        vec!["export", s(&d)],
        vec!["streams", s(&d)],
        vec!["verify", s(&d)],
        vec!["salvage", s(&d)],
    ] {
        let o = run(&args);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
    }
    ok(&["backup", s(&d), s(&dir.path().join("copy"))]);
    assert_eq!(contents(&d), before, "a read-only command wrote into the store");
}

// ------------------------------------------------------ read and read-all

/// CLI.md, `read`: "`--from V` starts at version V, inclusive, in the
/// direction read; `--backward` reads newest first (from the last version
/// without `--from`); `--limit N`", at the edges: 0, past the end,
/// `u64::MAX`; a value past `u64` does not parse (exit 2).
#[test]
fn read_options_at_zero_past_the_end_and_u64_max() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("st");
    three(&d);
    let max = u64::MAX.to_string();
    let v = |extra: &[&str]| {
        let mut args = vec!["read", s(&d), "a-1"];
        args.extend_from_slice(extra);
        versions(&ok(&args))
    };
    assert_eq!(v(&[]), [1, 2]);
    assert_eq!(v(&["--from", "0"]), [1, 2]);
    assert_eq!(v(&["--from", "2"]), [2]);
    assert_eq!(v(&["--from", "3"]), Vec::<u64>::new());
    assert_eq!(v(&["--from", &max]), Vec::<u64>::new());
    assert_eq!(v(&["--backward"]), [2, 1]);
    assert_eq!(v(&["--backward", "--from", "1"]), [1]);
    assert_eq!(v(&["--backward", "--from", "0"]), Vec::<u64>::new());
    assert_eq!(v(&["--backward", "--from", "99"]), [2, 1]);
    assert_eq!(v(&["--backward", "--from", &max]), [2, 1]);
    assert_eq!(v(&["--limit", "0"]), Vec::<u64>::new());
    assert_eq!(v(&["--limit", &max]), [1, 2]);
    assert_eq!(v(&["--backward", "--limit", "1"]), [2]);
    for bad in ["18446744073709551616", "-1", "x"] {
        let o = run(&["read", s(&d), "a-1", "--from", bad]);
        assert_eq!(code(&o), 2, "--from {bad}: {}", stderr(&o));
        assert!(o.stdout.is_empty());
    }
    // A stream without events prints nothing; an invalid name is exit 1.
    assert!(ok(&["read", s(&d), "nobody"]).is_empty());
    let o = run(&["read", s(&d), ""]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
}

/// CLI.md, `read-all`: "`--from P`: forward, the events *after* position
/// P; backward, the events before P. `--backward` without `--from` starts
/// at the last event. `--limit N` counts events after filtering", at 0,
/// past the end and `u64::MAX`.
#[test]
fn read_all_options_at_zero_past_the_end_and_u64_max() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("st");
    three(&d);
    let max = u64::MAX.to_string();
    let p = |extra: &[&str]| {
        let mut args = vec!["read-all", s(&d)];
        args.extend_from_slice(extra);
        positions(&ok(&args))
    };
    let none = Vec::<u64>::new();
    assert_eq!(p(&["--from", "0"]), [1, 2, 3]);
    assert_eq!(p(&["--from", "1"]), [2, 3]);
    assert_eq!(p(&["--from", "3"]), none);
    assert_eq!(p(&["--from", &max]), none);
    assert_eq!(p(&["--backward"]), [3, 2, 1]);
    assert_eq!(p(&["--backward", "--from", "0"]), none);
    assert_eq!(p(&["--backward", "--from", "1"]), none);
    assert_eq!(p(&["--backward", "--from", "3"]), [2, 1]);
    assert_eq!(p(&["--backward", "--from", "4"]), [3, 2, 1]);
    assert_eq!(p(&["--backward", "--from", &max]), [3, 2, 1]);
    assert_eq!(p(&["--limit", "0"]), none);
    assert_eq!(p(&["--limit", &max, "--type", "T"]), [1, 2]);
    assert_eq!(
        p(&["--type", "U", "--limit", "1"]),
        [3],
        "the limit counts after filtering"
    );
    assert_eq!(p(&["--backward", "--type", "T", "--limit", "1"]), [2]);
    assert_eq!(p(&["--category", "a"]), [1, 2, 3]);
    assert_eq!(p(&["--category", "b"]), none);
    for (flag, value) in [("--category", "a-1"), ("--category", ""), ("--type", "")] {
        let o = run(&["read-all", s(&d), flag, value]);
        assert_eq!(code(&o), 1, "{flag} {value:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty());
    }
}

// --------------------------------------------------------- JSON outputs

/// CLI.md, Conventions: "Output goes to stdout as JSON lines ... Nothing
/// else is written to stdout", with the keys each command's section lists.
#[test]
fn every_json_output_has_exactly_the_documented_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("st");
    let appended = ok(&["append", s(&d), "a-1", "T", "--metadata", "{\"u\":1}"]);
    assert_eq!(appended.len(), 1);
    assert_eq!(
        keys(&appended[0]),
        sorted(&[
            "stream",
            "first_version",
            "last_version",
            "first_position",
            "last_position"
        ])
    );
    let read = ok(&["read-all", s(&d)]);
    assert_eq!(
        keys(&read[0]),
        sorted(&[
            "position",
            "stream",
            "version",
            "id",
            "type",
            "timestamp",
            "data",
            "metadata"
        ])
    );
    let ts = read[0]["timestamp"].as_str().unwrap();
    // RFC 3339 in UTC with microseconds: 2026-11-23T10:47:29.551392Z
    assert_eq!(ts.len(), 27, "{ts}");
    assert!(
        ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.',
        "{ts}"
    );
    let exported = ok(&["export", s(&d)]);
    assert_eq!(
        keys(&exported[0]),
        sorted(&["stream", "expected", "id", "type", "data", "metadata"])
    );
    let streams = ok(&["streams", s(&d)]);
    assert_eq!(streams, [serde_json::json!({"stream":"a-1","version":1})]);
    let stats = ok(&["stats", s(&d)]);
    assert_eq!(stats.len(), 1);
    assert_eq!(
        keys(&stats[0]["open"]),
        sorted(&["index_loaded", "replayed_events", "torn_tail_bytes"])
    );
    let verify = ok(&["verify", s(&d)]);
    assert_eq!(verify.len(), 1);
    assert_eq!(
        keys(&verify[0]),
        sorted(&[
            "clean",
            "segments",
            "events",
            "streams",
            "bytes_checked",
            "torn_tail",
            "index",
            "snapshots",
            "checkpoints",
            "duplicate_ids",
            "corruption"
        ])
    );
    let repair = ok(&["repair", s(&d)]);
    assert_eq!(repair.len(), 1);
    assert_eq!(
        keys(&repair[0]),
        sorted(&[
            "repaired",
            "kept_events",
            "quarantined_events",
            "quarantined_bytes",
            "unreadable_bytes",
            "quarantine",
            "quarantined_files",
            "index_rebuilt",
            "checkpoints_quarantined",
            "checkpoints_lowered",
            "headers_rebuilt",
            "snapshots_dropped",
            "damage"
        ])
    );
    assert_eq!(repair[0]["repaired"], false);
    let copy = dir.path().join("copy");
    let backup = ok(&["backup", s(&d), s(&copy)]);
    assert_eq!(backup.len(), 1);
    assert_eq!(
        keys(&backup[0]),
        sorted(&["backup", "last_position", "segments", "bytes"])
    );
    assert_eq!(backup[0]["backup"], s(&copy));
    let salvaged = run(&["salvage", s(&d)]);
    assert_eq!(code(&salvaged), 0);
    assert!(salvaged.stdout.is_empty(), "salvage of nothing printed to stdout");
    // --progress goes to stderr only.
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, "{\"stream\":\"p-1\",\"type\":\"T\"}\n".repeat(50)).unwrap();
    let o = run(&["import", s(&d), s(&file), "--progress"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_lines(&o).len(), 50);
    let o = run(&["verify", s(&d), "--progress"]);
    assert_eq!(json_lines(&o).len(), 1);
}

/// README/CLI.md: `annal --help` and every command's `--help` document the
/// flags CLI.md lists; `--version` prints plain text on stdout, exit 0.
#[test]
fn help_lists_every_documented_flag_and_version_works() {
    for (cmd, flags) in [
        (
            "append",
            &[
                "--data",
                "--data-base64",
                "--metadata",
                "--metadata-base64",
                "--id",
                "--expected",
            ][..],
        ),
        ("import", &["--progress"][..]),
        ("read", &["--from", "--backward", "--limit"][..]),
        (
            "read-all",
            &["--from", "--backward", "--limit", "--type", "--category"][..],
        ),
        ("stats", &["--top"][..]),
        ("verify", &["--progress"][..]),
    ] {
        let o = run(&[cmd, "--help"]);
        assert_eq!(code(&o), 0);
        let text = stdout(&o);
        for flag in flags {
            assert!(text.contains(flag), "{cmd} --help lacks {flag}");
        }
        assert!(text.contains("Exit codes"), "{cmd} --help lacks the exit codes");
    }
    let o = run(&["--version"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).starts_with("annal "), "{}", stdout(&o));
}

// ---------------------------------------------------------- closed pipes

/// CLI.md: "When the reader of the output goes away (`annal read-all DIR |
/// head -1`), the command stops quietly with exit code 1."
#[test]
fn a_reading_command_whose_reader_went_away_stops_quietly_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("st");
    three(&d);
    for args in [
        vec!["read-all", s(&d)],
        vec!["read", s(&d), "a-1"],
        vec!["export", s(&d)],
        vec!["streams", s(&d)],
        vec!["stats", s(&d)],
    ] {
        let o = run_into_closed_pipe(&args);
        assert_eq!(code(&o), 1, "{args:?}");
        assert_eq!(stderr(&o), "", "{args:?}: not quiet");
    }
}

/// CLI.md, `append`: "If the line cannot be written (a full disk behind
/// stdout, a closed pipe), the command exits 1 and says on stderr that the
/// event was appended, with its id and position".
#[test]
fn an_append_whose_reader_went_away_says_the_event_was_appended() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("st");
    let id = "2b0a6a5e-8f43-4d0e-9c51-7d1f3c1e9a10";
    let o = run_into_closed_pipe(&["append", s(&d), "a-1", "T", "--id", id]);
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(err.contains(id) && err.contains("position 1"), "{err}");
    assert_eq!(ok(&["read-all", s(&d)]).len(), 1);
}

/// CLI.md, `import`: "When the results cannot be written (a full disk
/// behind stdout, a closed pipe), the import stops with exit code 1 and
/// says which input lines are appended all the same".
#[test]
fn an_import_whose_reader_went_away_says_which_lines_are_appended() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("st");
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, "{\"stream\":\"a-1\",\"type\":\"T\"}\n".repeat(3)).unwrap();
    let o = run_into_closed_pipe(&["import", s(&d), s(&file)]);
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(err.contains("input lines 1 to 3 are appended and durable"), "{err}");
    assert_eq!(ok(&["read-all", s(&d)]).len(), 3);
}

/// CLI.md, `backup`: the backup is complete whatever happens to the
/// summary; a closed pipe (as a full disk) says so.
#[test]
fn a_backup_whose_reader_went_away_says_it_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("st");
    three(&d);
    let copy = dir.path().join("copy");
    let o = run_into_closed_pipe(&["backup", s(&d), s(&copy)]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("is complete"), "{}", stderr(&o));
    assert_eq!(ok(&["read-all", s(&copy)]).len(), 3);
}

// ----------------------------------------------------------------- damage

/// CLI.md, What an open checks: damage in "the batches of the last 10,000
/// events ... fails the open, and so every command but `verify` and
/// `repair`, with exit code 4"; the message names the file and offset.
#[test]
fn damage_in_the_id_window_is_exit_4_for_every_command_but_repair() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("st");
    three(&d);
    flip(&d, b"MARK-2");
    let before = contents_but_lock(&d);
    let copy = dir.path().join("copy");
    for args in [
        vec!["read", s(&d), "a-1"],
        vec!["read", s(&d), "a-2"],
        vec!["read-all", s(&d)],
        vec!["export", s(&d)],
        vec!["stats", s(&d)],
        vec!["streams", s(&d)],
        vec!["backup", s(&d), s(&copy)],
        vec!["append", s(&d), "a-1", "T"],
        vec!["verify", s(&d)],
    ] {
        let o = run(&args);
        assert_eq!(code(&o), 4, "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.starts_with("annal: corruption in ") && err.contains("00000000000000000001.seg at byte offset"),
            "{args:?}: {err}"
        );
    }
    assert!(!copy.exists(), "a backup of a damaged store made its DEST");
    assert_eq!(contents_but_lock(&d), before, "a failed command changed the store");
    let r = &ok(&["repair", s(&d)])[0];
    assert_eq!(r["repaired"], true);
    assert_eq!(r["kept_events"], 1);
}

/// CLI.md, `verify`: "a checkpoint past the log's end ... make[s] the store
/// unclean (exit code 4); `repair` fixes both"; `repair`: "lowers every
/// checkpoint that names a position past the kept log ... (`checkpoints_lowered`
/// lists them as `{"name","was","now"}`)" with "one line per checkpoint
/// lowered" on stderr. The library refuses appends meanwhile.
#[test]
fn a_checkpoint_past_the_log_is_found_refused_and_lowered_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let store = Store::open(&a, Options::default()).unwrap();
    for i in 0..5 {
        store
            .append(
                "s-1",
                ExpectedVersion::Any,
                [EventData::new("T", format!("{i}").into_bytes())],
            )
            .unwrap();
    }
    store.backup(&b).unwrap();
    store
        .append("s-1", ExpectedVersion::Any, [EventData::new("T", b"5".to_vec())])
        .unwrap();
    store.checkpoints().save("c", 6).unwrap();
    store.checkpoints().save("ok", 2).unwrap();
    store.close().unwrap();
    std::fs::copy(
        a.join(annal::CHECKPOINTS_FILE_NAME),
        b.join(annal::CHECKPOINTS_FILE_NAME),
    )
    .unwrap();

    let o = run(&["verify", s(&b)]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let v = &json_lines(&o)[0];
    assert_eq!(v["clean"], false);
    assert_eq!(v["checkpoints"]["status"], "damaged", "{v}");
    let o = run(&["append", s(&b), "s-1", "T"]);
    assert_ne!(
        code(&o),
        0,
        "an append past a checkpoint ahead of the log: {}",
        stdout(&o)
    );
    assert!(o.stdout.is_empty());
    let o = run(&["repair", s(&b)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = &json_lines(&o)[0];
    assert_eq!(
        r["checkpoints_lowered"],
        serde_json::json!([{"name":"c","was":6,"now":5}]),
        "{r}"
    );
    assert!(stderr(&o).contains("checkpoint 'c' was at 6"), "{}", stderr(&o));
    ok(&["verify", s(&b)]);
    let r = ok(&["append", s(&b), "s-1", "T", "--expected", "5"]);
    assert_eq!(r[0]["first_position"], 6);
}

/// CLI.md, `repair`: "a torn tail is not damage (the next writing open
/// cuts it ...)"; "A store without damage is left alone (`"repaired":false`,
/// exit 0 ...)".
#[test]
fn repair_leaves_a_torn_tail_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("st");
    three(&d);
    tear(&d);
    let seg = std::fs::read(segment(&d, 1)).unwrap();
    let r = &ok(&["repair", s(&d)])[0];
    assert_eq!(r["repaired"], false, "{r}");
    assert_eq!(r["kept_events"], 3);
    assert_eq!(
        std::fs::read(segment(&d, 1)).unwrap(),
        seg,
        "repair cut or changed the torn tail"
    );
    assert!(!d.join("quarantine").exists(), "repair made a quarantine for nothing");
    let v = &ok(&["verify", s(&d)])[0];
    assert!(v["torn_tail"].is_object(), "{v}");
}

/// CLI.md, Files of a newer format: "`verify` and `repair` stop with exit
/// code 1 (`... has on-disk format version 2, this build of annal reads
/// version 1`) and `repair` moves nothing."
#[test]
fn a_segment_of_a_newer_format_is_exit_1_and_repair_moves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("st");
    three(&d);
    let p = segment(&d, 1);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[0..60]);
    let crc = h.finalize();
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&p, bytes).unwrap();
    let before = contents_but_lock(&d);
    for args in [vec!["verify", s(&d)], vec!["repair", s(&d)]] {
        let o = run(&args);
        assert_eq!(code(&o), 1, "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("has on-disk format version 2, this build of annal reads version 1"),
            "{args:?}: {}",
            stderr(&o)
        );
        assert!(o.stdout.is_empty(), "{args:?}");
    }
    assert_eq!(
        contents_but_lock(&d),
        before,
        "repair changed a store of a newer format"
    );
}

// ----------------------------------------------------------------- inputs

/// CLI.md, `import`: "Blank lines are skipped but counted in line
/// numbers"; lines ended by CRLF (a file written on Windows) are JSON lines
/// all the same.
#[test]
fn crlf_lines_import_and_blank_lines_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("st");
    let o = run_with_stdin(
        &["import", s(&d)],
        b"{\"stream\":\"a-1\",\"type\":\"T\"}\r\n\r\n{\"stream\":\"a-1\",\"type\":\"T\",\"expected\":1}\r\n",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_lines(&o).len(), 2);
    let o = run_with_stdin(
        &["import", s(&d)],
        b"\r\n\r\n{\"stream\":\"a-1\",\"type\":\"T\",\"expected\":7}\r\n",
    );
    assert_eq!(code(&o), 3);
    assert!(
        stderr(&o).starts_with("annal: line 3: wrong expected version"),
        "{}",
        stderr(&o)
    );
    // Invalid UTF-8 on a later line: the lines before it stay.
    let o = run_with_stdin(&["import", s(&d)], b"{\"stream\":\"b-1\",\"type\":\"T\"}\n\xff\n");
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("line 2"), "{}", stderr(&o));
    assert_eq!(json_lines(&o).len(), 1);
    assert_eq!(ok(&["read-all", s(&d)]).len(), 3);
}

/// CLI.md, `import`, Failures: "A line that is not valid JSON ... stops the
/// import". JSON (RFC 8259) allows only space, tab, LF and CR around a
/// value, but `import` trims each line with Rust's Unicode `trim()`: a
/// line that ends in a form feed or begins with a no-break space is
/// imported, and a line holding only U+00A0 is skipped as blank.
/// FAILS on the reviewed binary (low importance).
#[test]
fn an_import_line_that_is_not_json_by_rfc_8259_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (i, line) in [
        "{\"stream\":\"a-1\",\"type\":\"T\"}\u{c}\n",
        "\u{a0}{\"stream\":\"a-1\",\"type\":\"T\"}\n",
        "\u{3000}\n",
    ]
    .iter()
    .enumerate()
    {
        let d = dir.path().join(format!("st{i}"));
        let o = run_with_stdin(&["import", s(&d)], line.as_bytes());
        assert_eq!(code(&o), 1, "{line:?} was accepted: {}", stdout(&o));
        assert!(stderr(&o).contains("line 1: invalid JSON"), "{line:?}: {}", stderr(&o));
    }
}

/// CLI.md, `append`: "`--id UUID` ... Retrying an append with the same id
/// does not write it twice"; the retry prints the result of the append it
/// repeats. The same id with other data is refused, exit 1, nothing written.
#[test]
fn an_append_retried_with_its_id_prints_the_first_result_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("st");
    let id = "5d7e2f0a-1b3c-4d5e-8f60-718293a4b5c6";
    let first = ok(&[
        "append",
        s(&d),
        "a-1",
        "T",
        "--id",
        id,
        "--data",
        "1",
        "--expected",
        "no-stream",
    ]);
    ok(&["append", s(&d), "b-1", "T"]);
    for expected in ["any", "no-stream", "0", "exists"] {
        let again = ok(&[
            "append",
            s(&d),
            "a-1",
            "T",
            "--id",
            id,
            "--data",
            "1",
            "--expected",
            expected,
        ]);
        assert_eq!(again, first, "--expected {expected}");
    }
    let o = run(&["append", s(&d), "a-1", "T", "--id", id, "--data", "2"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    let o = run(&["append", s(&d), "c-1", "T", "--id", id, "--data", "1"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_eq!(positions(&ok(&["read-all", s(&d)])), [1, 2]);
}

/// CLI.md, `export`: "`import` appends after whatever the store holds:
/// into a store that is not empty, positions shift (versions still follow
/// each line's `expected`)"; into a store that holds the same events it is
/// an idempotent retry that writes nothing.
#[test]
fn an_export_imported_into_a_non_empty_store_or_into_itself() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    three(&a);
    let exported = run(&["export", s(&a)]);
    assert_eq!(code(&exported), 0);
    // Into itself: every line is a retry.
    let o = run_with_stdin(&["import", s(&a)], &exported.stdout);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_lines(&o).len(), 3);
    assert_eq!(ok(&["stats", s(&a)])[0]["events"], 3, "a re-import wrote events again");
    // Into a store holding another stream: positions shift by one.
    let b = dir.path().join("b");
    ok(&["append", s(&b), "z-1", "T"]);
    let o = run_with_stdin(&["import", s(&b)], &exported.stdout);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let firsts: Vec<u64> = json_lines(&o)
        .iter()
        .map(|r| r["first_position"].as_u64().unwrap())
        .collect();
    assert_eq!(firsts, [2, 3, 4]);
    let read = ok(&["read", s(&b), "a-1"]);
    assert_eq!(versions(&read), [1, 2]);
    assert_eq!(positions(&read), [2, 4]);
    // Into a store whose stream went on differently: exit 3, line 1.
    let c = dir.path().join("c");
    ok(&["append", s(&c), "a-1", "Other"]);
    let o = run_with_stdin(&["import", s(&c)], &exported.stdout);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).starts_with("annal: line 1: "), "{}", stderr(&o));
}

// ------------------------------------------------------------ store paths

/// CLI.md, Locking: "short commands run one after another simply wait for
/// each other"; appends racing to create one store make one store: each
/// succeeds or is locked out (exit 5), and every success is in it.
#[test]
fn appends_racing_to_create_a_store_make_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("new/st");
    let children: Vec<Child> = (0..4)
        .map(|i| {
            Command::new(BIN)
                .args(["append", s(&d), &format!("r-{i}"), "T"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut appended = 0;
    for c in children {
        let o = c.wait_with_output().unwrap();
        match code(&o) {
            0 => appended += 1,
            5 => {}
            other => panic!("exit {other}: {}", stderr(&o)),
        }
    }
    assert!(appended >= 1);
    let v = &ok(&["verify", s(&d)])[0];
    assert_eq!(v["clean"], true, "{v}");
    assert_eq!(v["segments"], 1, "{v}");
    assert_eq!(v["events"], appended, "{v}");
}

/// CLI.md, Store creation: "Every other command fails with exit code 1
/// (`no annal store in DIR`) and creates nothing"; a DIR that is a regular
/// file is no store for any command (and `append`/`import` cannot create
/// one there): exit 1, the file untouched.
#[test]
fn a_store_path_that_is_a_file_is_exit_1_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("afile");
    std::fs::write(&f, b"keep me").unwrap();
    let copy = dir.path().join("copy");
    for args in [
        vec!["read", s(&f), "a-1"],
        vec!["read-all", s(&f)],
        vec!["export", s(&f)],
        vec!["stats", s(&f)],
        vec!["streams", s(&f)],
        vec!["verify", s(&f)],
        vec!["repair", s(&f)],
        vec!["backup", s(&f), s(&copy)],
        vec!["salvage", s(&f)],
        vec!["append", s(&f), "a-1", "T"],
    ] {
        let o = run(&args);
        assert_eq!(code(&o), 1, "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{args:?}");
    }
    let o = run_with_stdin(&["import", s(&f)], b"{\"stream\":\"a-1\",\"type\":\"T\"}\n");
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(!stderr(&o).contains("line 1"), "no line is at fault: {}", stderr(&o));
    assert_eq!(std::fs::read(&f).unwrap(), b"keep me");
    assert!(!copy.exists());
}

/// Paths with spaces and non-ASCII characters, a relative path, and a
/// symbolic link to the store all name the store; `backup` writes DEST as
/// given.
#[cfg(unix)]
#[test]
fn store_paths_with_spaces_unicode_links_and_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("my store/ünï cødé");
    ok(&["append", s(&d), "a-1", "T"]);
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&d, &link).unwrap();
    ok(&["append", s(&link), "a-1", "T", "--expected", "1"]);
    assert_eq!(ok(&["read", s(&d), "a-1"]).len(), 2);
    let o = Command::new(BIN)
        .current_dir(&d)
        .args(["backup", ".", "../b ü"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_lines(&o)[0]["backup"], "../b ü");
    assert_eq!(ok(&["stats", s(&dir.path().join("my store/b ü"))])[0]["events"], 2);
    // A backup inside the store, through the relative path, is refused.
    let o = Command::new(BIN)
        .current_dir(&d)
        .args(["backup", ".", "inner"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(!d.join("inner").exists());
}

/// CLI.md, `append`: "`--data JSON` the event data"; exit code 2 is for "a
/// flag value that does not parse (`--expected maybe`, `--data '{x'`, ...)".
/// A negative number is valid JSON, but `--data -1` (and `--metadata -1`)
/// is refused as a usage error, "unexpected argument '-1' found", with a tip
/// to write `-- -1` (which would make it a positional argument): only
/// `--data=-1` works. `--expected` accepts hyphen values; `--data` and
/// `--metadata` should too. FAILS on the reviewed binary.
#[test]
fn append_takes_a_negative_number_as_its_data_or_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("st");
    let o = run(&["append", s(&d), "a-1", "T", "--data", "-1", "--metadata", "-2.5e3"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let e = &ok(&["read", s(&d), "a-1"])[0];
    assert_eq!(e["data"], -1);
    assert_eq!(e["metadata"], -2500.0);
}

/// CLI.md, What an open checks: with damage more than 10,000 events before
/// the end, "`stats`, `streams` and `append` succeed ... and
/// `read`/`read-all` fail with exit code 4 when they reach it, after
/// printing the events before it ... An `append` to such a store is
/// durable, but `repair` keeps only the log before the damage and moves
/// the rest, that append included, into quarantine" (and `salvage` prints
/// it back).
#[test]
fn damage_far_back_fails_only_the_reads_that_reach_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("st");
    let mut lines = String::from(concat!(
        "{\"stream\":\"x-1\",\"type\":\"T\",\"data\":{\"m\":\"FIRST\"}}\n",
        "{\"stream\":\"x-2\",\"type\":\"T\",\"data\":{\"m\":\"DAMAGED\"}}\n",
    ));
    for i in 0..10_050 {
        lines.push_str(&format!(
            "{{\"stream\":\"s-{}\",\"type\":\"T\",\"data\":{i}}}\n",
            i % 10
        ));
    }
    import(&d, &lines);
    flip(&d, b"DAMAGED");
    assert_eq!(ok(&["stats", s(&d)])[0]["events"], 10_052);
    assert_eq!(ok(&["streams", s(&d)]).len(), 12);
    for args in [vec!["read-all", s(&d)], vec!["export", s(&d)]] {
        let o = run(&args);
        assert_eq!(code(&o), 4, "{args:?}: {}", stderr(&o));
        assert_eq!(
            json_lines(&o).len(),
            1,
            "{args:?}: the event before the damage, then exit 4"
        );
    }
    let o = run(&["read", s(&d), "x-2"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert_eq!(
        ok(&["read", s(&d), "s-1"]).len(),
        1_005,
        "a stream the damage is not in reads"
    );
    let id = "3c1a6b5e-2d4f-4a8b-9c0d-1e2f3a4b5c6d";
    ok(&["append", s(&d), "late-1", "T", "--id", id]);
    let r = &ok(&["repair", s(&d)])[0];
    assert_eq!(r["kept_events"], 1, "{r}");
    let salvaged = ok(&["salvage", s(&d)]);
    assert!(
        salvaged.iter().any(|l| l["id"] == id),
        "the late append is not in the quarantine"
    );
}

/// CLI.md, `backup`: "DEST must not exist, not even as a dangling link, its
/// parent must, and it must not lie inside DIR ... (exit code 1 otherwise,
/// nothing written) ... a failed backup removes its temporary directory".
#[cfg(unix)]
#[test]
fn a_refused_or_failed_backup_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("st");
    three(&d);
    let target = dir.path().join("target");
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink(&target, &dangling).unwrap();
    let file = dir.path().join("afile");
    std::fs::write(&file, b"x").unwrap();
    let listing = |p: &Path| names(p);
    let before = listing(dir.path());
    for dest in [
        dangling.clone(),
        file.join("copy"),
        dir.path().join("missing/copy"),
        d.join("inner"),
        d.clone(),
    ] {
        let o = run(&["backup", s(&d), s(&dest)]);
        assert_eq!(code(&o), 1, "{dest:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty());
    }
    assert!(!target.exists(), "a backup wrote through a dangling link");
    assert_eq!(listing(dir.path()), before);
    // Damage the open does not see stops the backup (exit 4) and leaves no
    // temporary directory beside DEST.
    flip(&d, b"MARK-2");
    let o = run(&["backup", s(&d), s(&dir.path().join("copy"))]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert_eq!(
        listing(dir.path()),
        before,
        "a failed backup left something beside DEST"
    );
}

/// CLI.md, `backup`: "DEST appears complete or not at all (two backups to
/// one DEST at once: one succeeds, the other fails), and a failed backup
/// removes its temporary directory".
#[test]
fn backups_racing_to_one_dest_make_one_backup_and_leave_no_temporary_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("st");
    three(&d);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let dest = out.join("copy");
    let children: Vec<Child> = (0..3)
        .map(|_| {
            Command::new(BIN)
                .args(["backup", s(&d), s(&dest)])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let codes: Vec<i32> = children
        .into_iter()
        .map(|c| code(&c.wait_with_output().unwrap()))
        .collect();
    assert_eq!(codes.iter().filter(|&&c| c == 0).count(), 1, "{codes:?}");
    assert!(codes.iter().all(|&c| c == 0 || c == 1), "{codes:?}");
    assert_eq!(names(&out), ["copy"], "a temporary directory was left beside DEST");
    assert_eq!(ok(&["verify", s(&dest)])[0]["events"], 3);
}

/// A backup whose destination's parent is a file is refused naming it as
/// such, not as a directory that "does not exist".
#[test]
fn a_backup_into_a_file_says_it_is_not_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("st");
    three(&d);
    let file = dir.path().join("afile");
    std::fs::write(&file, b"x").unwrap();
    let dest = file.join("copy");
    let o = run(&["backup", s(&d), s(&dest)]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("is not a directory") && !err.contains("does not exist"),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

/// CLI.md, `verify`: damage is exit code 4 with the damage named on stderr,
/// also when the report line cannot be written (a full disk behind stdout);
/// a clean store whose report cannot be written is exit 1.
#[test]
fn verify_reports_damage_even_when_its_report_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("broken");
    three(&d);
    let o = run_into_full_disk(&["verify", s(&d)]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    flip(&d, b"MARK-2");
    let before = std::fs::read(segment(&d, 1)).unwrap();
    let o = run_into_full_disk(&["verify", s(&d)]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("00000000000000000001.seg") && err.contains("No space left"),
        "{err}"
    );
    assert_eq!(std::fs::read(segment(&d, 1)).unwrap(), before, "verify changes nothing");
}

/// CLI.md, `append`: `--data-base64` takes what `base64` prints, wrapped
/// in lines of 76 characters, and stores the bytes exactly.
#[test]
fn data_base64_takes_base64_output_wrapped_in_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("st");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(300).collect();
    let file = dir.path().join("blob");
    std::fs::write(&file, &bytes).unwrap();
    let wrapped = Command::new("base64").arg(&file).output().unwrap();
    assert!(wrapped.status.success());
    let wrapped = String::from_utf8(wrapped.stdout).unwrap();
    assert!(wrapped.trim_end().contains('\n'), "base64 wraps 300 bytes");
    let o = run(&["append", s(&d), "b-1", "Blob", "--data-base64", wrapped.trim_end()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let read = ok(&["read", s(&d), "b-1"]);
    let one_line = Command::new("base64").arg("-w0").arg(&file).output().unwrap();
    assert!(one_line.status.success());
    assert_eq!(
        read[0]["data_base64"].as_str().unwrap(),
        String::from_utf8(one_line.stdout).unwrap()
    );
    // Not base64 at all is still a usage error.
    let o = run(&["append", s(&d), "b-1", "Blob", "--data-base64", "@@@@"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}
