//! Random appends, retries, reads and reopens against an in-memory model.

use std::collections::HashMap;

use annal::{Error, EventData, ExpectedVersion, Options, ReadAll, ReadStream, Store, StreamAppend, Uuid};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Expect {
    Any,
    NoStream,
    StreamExists,
    Current,
    Off(u64),
}

#[derive(Clone, Debug)]
enum Op {
    Append {
        stream: u8,
        expect: Expect,
        sizes: Vec<u16>,
    },
    Multi {
        a: u8,
        b: u8,
        n: u8,
    },
    RetryLast,
    /// Retries the `n`-th most recent successful append, when the store
    /// promises to recognise it (see `recognised`).
    RetryOld(u8),
    Reopen {
        drop_index: bool,
    },
    ReadBack {
        stream: u8,
        from: u64,
        limit: usize,
        backward: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let expect = prop_oneof![
        Just(Expect::Any),
        Just(Expect::NoStream),
        Just(Expect::StreamExists),
        Just(Expect::Current),
        (1u64..3).prop_map(Expect::Off),
    ];
    prop_oneof![
        6 => (0u8..5, expect, prop::collection::vec(0u16..600, 1..5))
            .prop_map(|(stream, expect, sizes)| Op::Append { stream, expect, sizes }),
        1 => (0u8..5, 0u8..5, 1u8..3).prop_map(|(a, b, n)| Op::Multi { a, b, n }),
        1 => Just(Op::RetryLast),
        2 => any::<u8>().prop_map(Op::RetryOld),
        1 => any::<bool>().prop_map(|drop_index| Op::Reopen { drop_index }),
        2 => (0u8..5, 0u64..8, 0usize..6, any::<bool>())
            .prop_map(|(stream, from, limit, backward)| Op::ReadBack { stream, from, limit, backward }),
    ]
}

/// What the model holds for each event.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ev {
    stream: String,
    version: u64,
    id: Uuid,
    data: Vec<u8>,
}

#[derive(Default)]
struct Model {
    global: Vec<Ev>,
    versions: HashMap<String, u64>,
}

impl Model {
    fn version(&self, s: &str) -> u64 {
        self.versions.get(s).copied().unwrap_or(0)
    }

    fn allows(&self, s: &str, e: ExpectedVersion) -> bool {
        let v = self.version(s);
        match e {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => v == 0,
            ExpectedVersion::StreamExists => v > 0,
            ExpectedVersion::Exact(n) => v == n,
        }
    }

    fn apply(&mut self, s: &str, events: &[EventData]) {
        for e in events {
            let v = self.version(s) + 1;
            self.versions.insert(s.to_string(), v);
            self.global.push(Ev {
                stream: s.to_string(),
                version: v,
                id: e.id(),
                data: e.data().to_vec(),
            });
        }
    }
}

fn name(i: u8) -> String {
    format!("Cat{}-{}", i % 2, i)
}

fn check_all(store: &Store, model: &Model) {
    let got: Vec<Ev> = store
        .read_all(ReadAll::forward())
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            Ev {
                stream: e.stream().to_string(),
                version: e.version(),
                id: e.id(),
                data: e.data().to_vec(),
            }
        })
        .collect();
    assert_eq!(got, model.global);
    assert_eq!(store.last_position(), model.global.len() as u64);
}

/// Whether a retry of `appends` (written with `results`) is one the store
/// promises to recognise: `Exact`/`NoStream` always; `Any`/`StreamExists`
/// while the window of the last `window` ids holds one of its ids, or its
/// events are still their stream's last ones.
fn recognised(appends: &[StreamAppend], results: &[annal::AppendResult], model: &Model, window: u64) -> bool {
    let last = model.global.len() as u64;
    appends.iter().zip(results).all(|(a, r)| match a.expected {
        ExpectedVersion::Exact(_) | ExpectedVersion::NoStream => true,
        ExpectedVersion::Any | ExpectedVersion::StreamExists => {
            r.last_position + window > last || model.version(&a.stream) == r.last_version
        }
    })
}

fn run(ops: Vec<Op>, window: usize) {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default()
        .with_segment_size_bytes(8 * 1024)
        .with_idempotency_window_events(window);
    let mut store = Some(Store::open(dir.path(), options.clone()).unwrap());
    let mut model = Model::default();
    let mut last: Option<(Vec<StreamAppend>, Vec<annal::AppendResult>)> = None;
    let mut done: Vec<(Vec<StreamAppend>, Vec<annal::AppendResult>)> = Vec::new();
    let mut counter = 0u64;
    for op in ops {
        let s = store.as_ref().unwrap();
        match op {
            Op::Append { stream, expect, sizes } => {
                let st = name(stream);
                let v = model.version(&st);
                let expected = match expect {
                    Expect::Any => ExpectedVersion::Any,
                    Expect::NoStream => ExpectedVersion::NoStream,
                    Expect::StreamExists => ExpectedVersion::StreamExists,
                    Expect::Current => ExpectedVersion::Exact(v),
                    Expect::Off(d) => ExpectedVersion::Exact(v + d),
                };
                let events: Vec<EventData> = sizes
                    .iter()
                    .map(|&n| {
                        counter += 1;
                        EventData::new(format!("T{}", n % 3), vec![(counter % 251) as u8; n as usize])
                    })
                    .collect();
                let result = s.append(&st, expected, events.clone());
                if model.allows(&st, expected) {
                    let r = result.unwrap();
                    assert_eq!(r.first_version, v + 1);
                    assert_eq!(r.first_position, model.global.len() as u64 + 1);
                    model.apply(&st, &events);
                    last = Some((vec![StreamAppend::new(st, expected, events)], vec![r]));
                    done.extend(last.clone());
                } else {
                    let err = result.unwrap_err();
                    let actual = (v > 0).then_some(v);
                    assert!(
                        matches!(err, Error::WrongExpectedVersion { actual: a, .. } if a == actual),
                        "{err}"
                    );
                }
            }
            Op::Multi { a, b, n } => {
                let (sa, sb) = (name(a), name(b));
                let appends: Vec<StreamAppend> = [&sa, &sb]
                    .iter()
                    .map(|st| {
                        let events = (0..n).map(|k| EventData::new("M", vec![k; 3])).collect::<Vec<_>>();
                        StreamAppend::new(st.as_str(), ExpectedVersion::Exact(model.version(st)), events)
                    })
                    .collect();
                let result = s.append_multi(&appends);
                if sa == sb {
                    assert!(matches!(result, Err(Error::InvalidInput(_))));
                } else {
                    let results = result.unwrap();
                    for ap in &appends {
                        model.apply(&ap.stream, &ap.events);
                    }
                    last = Some((appends, results));
                    done.extend(last.clone());
                }
            }
            Op::RetryLast => {
                if let Some((appends, results)) = &last
                    && recognised(appends, results, &model, window as u64)
                {
                    assert_eq!(&s.append_multi(appends).unwrap(), results);
                }
            }
            Op::RetryOld(n) => {
                if let Some((appends, results)) = done.iter().rev().nth(n as usize % done.len().max(1))
                    && recognised(appends, results, &model, window as u64)
                {
                    assert_eq!(&s.append_multi(appends).unwrap(), results, "{appends:?}");
                }
            }
            Op::Reopen { drop_index } => {
                store.take().unwrap().close().unwrap();
                if drop_index {
                    std::fs::remove_file(dir.path().join("index")).unwrap();
                }
                store = Some(Store::open(dir.path(), options.clone()).unwrap());
                // Retries of the last append are still recognised.
            }
            Op::ReadBack {
                stream,
                from,
                limit,
                backward,
            } => {
                let st = name(stream);
                let mut mine: Vec<&Ev> = model.global.iter().filter(|e| e.stream == st).collect();
                let read = if backward {
                    mine.reverse();
                    mine.retain(|e| e.version <= from.max(1));
                    ReadStream::backward().from_version(from.max(1))
                } else {
                    mine.retain(|e| e.version >= from);
                    ReadStream::forward().from_version(from)
                };
                mine.truncate(limit);
                let got: Vec<(u64, Uuid)> = s
                    .read_stream(&st, read.limit(limit))
                    .unwrap()
                    .map(|e| e.map(|e| (e.version(), e.id())).unwrap())
                    .collect();
                let want: Vec<(u64, Uuid)> = mine.iter().map(|e| (e.version, e.id)).collect();
                assert_eq!(got, want);
            }
        }
        check_all(store.as_ref().unwrap(), &model);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops, 10_000);
    }

    /// The same with windows small enough for retries to fall out of them,
    /// wholly or in part.
    #[test]
    fn store_matches_model_with_small_id_windows(
        ops in prop::collection::vec(op(), 1..60),
        window in prop_oneof![Just(0usize), Just(1), Just(3), Just(16)],
    ) {
        run(ops, window);
    }
}
