//! Arbitrary text as one `annal import` line, through the CLI's own parser
//! (its source files compiled in from src/bin/annal). Never a panic; a
//! line it accepts is a JSON object naming the stream it parsed; and every
//! event it accepts, once stored, comes back from `annal export`'s line for
//! it as the same event byte for byte (export then import is lossless),
//! while `annal read`'s line for it is valid JSON on one line.
#![no_main]

#[allow(dead_code)]
#[path = "../../src/bin/annal/expected.rs"]
mod expected;
#[allow(dead_code)]
#[path = "../../src/bin/annal/input.rs"]
mod input;
#[allow(dead_code)]
#[path = "../../src/bin/annal/json.rs"]
mod json;

use std::collections::BTreeMap;
use std::path::Path;

use annal::io::sim::SimFs;
use annal::{Durability, ExpectedVersion, Options, ReadStream, Store, StreamAppend};
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(append) = input::parse_line(text) else {
        return;
    };

    // Accepted: a JSON object with the stream it parsed, and its events.
    // (Its values are read as raw text: JSON's grammar allows numbers
    // such as 1e400 that serde_json's values refuse.)
    let object: BTreeMap<String, Box<RawValue>> = serde_json::from_str(text).expect("an accepted line is an object");
    let member = |key: &str| object.get(key).map(|raw| raw.get());
    let stream: String = serde_json::from_str(member("stream").expect("a stream")).expect("a string");
    assert_eq!(stream, append.stream);
    let given = member("events").map_or(1, |raw| {
        serde_json::from_str::<Vec<IgnoredAny>>(raw).expect("an array").len()
    });
    assert_eq!(append.events.len(), given, "{text:?}");

    // Stored (under any expected version) and exported again: the same events.
    let options = Options::default()
        .with_durability(Durability::Buffered)
        .with_segment_size_bytes(1 << 20);
    let store = Store::open_with(SimFs::new(1), Path::new("/fuzz/store"), options).expect("open");
    let stream = append.stream.clone();
    let Ok(_) = store.append_multi(&[StreamAppend::new(
        stream.clone(),
        ExpectedVersion::Any,
        append.events.clone(),
    )]) else {
        // Refused by the store (a name or size past its limits, one id
        // twice): the import would report the same error.
        return;
    };
    let stored: Vec<_> = store
        .read_stream(&stream, ReadStream::forward())
        .expect("read")
        .collect::<Result<_, _>>()
        .expect("events just appended");
    assert_eq!(stored.len(), append.events.len());
    for (original, e) in append.events.iter().zip(&stored) {
        assert_eq!(
            (
                original.id(),
                original.event_type(),
                original.data(),
                original.metadata(),
                original.schema_version()
            ),
            (e.id(), e.event_type(), e.data(), e.metadata(), e.schema_version()),
        );

        let line = json::export_line(e);
        assert!(!line.contains(['\n', '\r']), "export line {line:?}");
        let again = input::parse_line(&line).unwrap_or_else(|m| panic!("export line {line:?} refused: {m}"));
        let expected = match e.version() {
            1 => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(v - 1),
        };
        assert_eq!((again.stream.as_str(), again.expected), (e.stream(), expected));
        let [back] = again.events.as_slice() else {
            panic!("export line {line:?} holds {} events", again.events.len());
        };
        assert_eq!(
            (
                back.id(),
                back.event_type(),
                back.data(),
                back.metadata(),
                back.schema_version()
            ),
            (e.id(), e.event_type(), e.data(), e.metadata(), e.schema_version()),
            "through {line:?}"
        );

        let shown = json::event_line(e);
        assert!(!shown.contains(['\n', '\r']), "read line {shown:?}");
        serde_json::from_str::<IgnoredAny>(&shown).unwrap_or_else(|m| panic!("read line {shown:?}: {m}"));
    }
});
