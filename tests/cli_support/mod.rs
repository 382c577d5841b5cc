//! Running the `annal` binary from the command-line tests: a run with its
//! arguments, with input on stdin, with stdout on a closed pipe or on a
//! full disk, and reading what it printed.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// The binary built for the tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_annal");

/// Runs `annal` with `args`, stdin empty.
pub fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// Runs `annal` with `args` and `input` on stdin. The input is written
/// from another thread so that large outputs cannot deadlock, its errors
/// ignored: a command that fails early closes its stdin.
pub fn run_with_stdin(args: &[&str], input: impl AsRef<[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.as_ref().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    output
}

/// Runs with stdout on a pipe whose reading end is already closed: every
/// write fails with `EPIPE` (the reader went away).
pub fn run_into_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

/// Runs with stdout on `/dev/full`, where every write fails for lack of
/// space (Linux).
#[cfg(target_os = "linux")]
pub fn run_into_full_disk(args: &[&str]) -> Output {
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    Command::new(BIN).args(args).stdout(full).output().unwrap()
}

/// The exit code (the command was not killed by a signal).
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

/// What the command printed on stdout (UTF-8, as every output is).
pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// What the command printed on stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every stdout line, parsed strictly: stdout must be nothing but JSON
/// values, one per line, each line ended (CLI.md, Conventions: "Output
/// goes to stdout as JSON lines").
pub fn json_lines(o: &Output) -> Vec<Value> {
    let text = stdout(o);
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "unterminated output: {text:.200}"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON value ({e}): {l:.200}")))
        .collect()
}

/// A path as an argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
