//! This test binary run again as a child process that runs one test of
//! itself, then killed with SIGKILL: the crash tests' harness.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use annal::Durability;

/// The durability a child's mode names, for the parent and the child
/// alike: `"buffered"`, `"periodic"` (a 5 ms sync interval), anything
/// else durable.
pub fn durability(mode: &str) -> Durability {
    match mode {
        "buffered" => Durability::Buffered,
        "periodic" => Durability::Periodic(Duration::from_millis(5)),
        _ => Durability::Sync,
    }
}

/// Runs this test binary again as a child process running only the test
/// named `test` (`--exact`, output not captured, one thread), with the
/// variables `env` set (a child test does its work only when they are);
/// kills it (SIGKILL) `run` after it printed its first line (the test
/// harness's, so that the time it takes to start on a loaded machine
/// does not eat into `run`; at most a minute is waited for that line)
/// and returns the lines it printed on stdout until then, a line cut by
/// the kill included.
pub fn run_and_kill(test: &str, env: &[(&str, &dyn AsRef<OsStr>)], run: Duration) -> Vec<String> {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["--exact", test, "--nocapture", "--test-threads=1"]);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (started, first_line) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.is_empty() {
                let _ = started.send(());
            }
            lines.push(line);
        }
        lines
    });
    let _ = first_line.recv_timeout(Duration::from_secs(60));
    std::thread::sleep(run);
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap()
}

/// An acknowledged append a child printed: its first and last position
/// and its events' ids.
pub type Ack = (u64, u64, Vec<String>);

/// The acknowledged appends among a child's lines, each printed as
/// `ack FIRST LAST ID,ID,...` after the append returned.
pub fn acks(lines: &[String]) -> Vec<Ack> {
    lines
        .iter()
        .filter_map(|line| {
            let rest = line.strip_prefix("ack ")?;
            let mut parts = rest.split(' ');
            let first: u64 = parts.next().unwrap().parse().unwrap();
            let last: u64 = parts.next().unwrap().parse().unwrap();
            let ids: Vec<String> = parts.next().unwrap().split(',').map(str::to_string).collect();
            Some((first, last, ids))
        })
        .collect()
}
