//! `annal import` killed with SIGKILL at random moments while it streams
//! events: after reopening, every acknowledged line is there with the
//! versions and positions it was acknowledged with, the store holds whole
//! lines only (a prefix of the input), and positions and versions are
//! gapless.
#![cfg(feature = "cli")]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use annal::{Options, ReadAll, Store, Uuid};
use common::rng::Rng;

const BIN: &str = env!("CARGO_BIN_EXE_annal");
const STREAMS: u64 = 5;

/// Line `i` of the input: 1 to 3 events for stream `k-{i % 5}`, with ids
/// derived from (i, k), appended at an exact expected version.
fn line(i: u64, versions: &mut HashMap<u64, u64>) -> (String, Vec<Uuid>) {
    let stream = i % STREAMS;
    let n = i % 3 + 1;
    let ids: Vec<Uuid> = (0..n)
        .map(|k| Uuid::from_u128((u128::from(i) << 8 | u128::from(k)) + 1))
        .collect();
    let version = versions.entry(stream).or_insert(0);
    let expected = if *version == 0 {
        "\"no-stream\"".to_string()
    } else {
        version.to_string()
    };
    *version += n;
    let events: Vec<String> = ids
        .iter()
        .map(|id| format!("{{\"type\":\"Tick\",\"id\":\"{id}\",\"data\":{{\"line\":{i}}}}}"))
        .collect();
    let text = format!(
        "{{\"stream\":\"k-{stream}\",\"expected\":{expected},\"events\":[{}]}}\n",
        events.join(",")
    );
    (text, ids)
}

#[test]
fn killed_import_loses_no_acknowledged_line() {
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    let mut rng = Rng::new(seed);
    let mut total_acks = 0;
    for round in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(BIN)
            .args(["import", dir.path().to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            // Written in bursts of various sizes so that the import sees
            // both a full buffer and an empty pipe.
            let mut out = BufWriter::with_capacity(4096, stdin);
            let mut versions = HashMap::new();
            for i in 0u64..2_000_000 {
                let (text, _) = line(i, &mut versions);
                if out.write_all(text.as_bytes()).is_err() {
                    break;
                }
                if i % 97 == 0 && out.flush().is_err() {
                    break;
                }
            }
        });
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            // A line is an acknowledgement once it is whole: the kill may
            // cut the last one short (a write of more than a pipe's atomic
            // size lands in parts).
            let mut acks = Vec::new();
            let mut reader = BufReader::new(stdout);
            let mut l = Vec::new();
            while reader.read_until(b'\n', &mut l).is_ok_and(|n| n > 0) && l.ends_with(b"\n") {
                let v: serde_json::Value = serde_json::from_slice(&l).unwrap();
                acks.push(v);
                l.clear();
            }
            acks
        });
        let wait = Duration::from_millis(50 + rng.next() % 600);
        std::thread::sleep(wait);
        child.kill().unwrap();
        child.wait().unwrap();
        let acks = reader.join().unwrap();
        writer.join().unwrap();

        let store = Store::open(dir.path(), Options::default())
            .unwrap_or_else(|e| panic!("seed {seed} round {round}: reopen failed: {e}"));
        let events = store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap();
        // Gapless positions, and per stream gapless versions.
        let mut versions: HashMap<String, u64> = HashMap::new();
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.position(), i as u64 + 1, "seed {seed}: positions are gapless");
            let v = versions.entry(e.stream().to_string()).or_insert(0);
            *v += 1;
            assert_eq!(e.version(), *v, "seed {seed}: versions of {} are gapless", e.stream());
        }
        // The store holds whole input lines, in order: a prefix of the input.
        let mut input_versions = HashMap::new();
        let mut at = 0usize;
        let mut lines_stored = 0u64;
        while at < events.len() {
            let (_, ids) = line(lines_stored, &mut input_versions);
            for (k, id) in ids.iter().enumerate() {
                let e = events
                    .get(at + k)
                    .unwrap_or_else(|| panic!("seed {seed}: line {lines_stored} stored in part"));
                assert_eq!(e.id(), *id, "seed {seed}: position {} holds another event", at + k + 1);
            }
            at += ids.len();
            lines_stored += 1;
        }
        // Every acknowledged line is there, where it was acknowledged.
        assert!(
            acks.len() as u64 <= lines_stored,
            "seed {seed}: acknowledged more than stored"
        );
        let mut first = 1u64;
        let mut replay = HashMap::new();
        for (i, ack) in acks.iter().enumerate() {
            let (_, ids) = line(i as u64, &mut replay);
            let last = first + ids.len() as u64 - 1;
            assert_eq!(ack["stream"], format!("k-{}", i as u64 % STREAMS));
            assert_eq!(ack["first_position"], first, "seed {seed}: ack {i}");
            assert_eq!(ack["last_position"], last, "seed {seed}: ack {i}");
            let e = &events[first as usize - 1];
            assert_eq!(ack["first_version"], e.version(), "seed {seed}: ack {i}");
            assert_eq!(ack["last_version"], events[last as usize - 1].version());
            first = last + 1;
        }
        store.close().unwrap();
        eprintln!(
            "round {round}: killed after {wait:?}: {} lines acknowledged, {lines_stored} stored, {} events",
            acks.len(),
            events.len()
        );
        total_acks += acks.len();
    }
    assert!(total_acks > 0, "seed {seed}: the import never acknowledged anything");
}
