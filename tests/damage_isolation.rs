//! Damage in the middle of a segment costs the events of the damaged
//! batch, not the intact events after it: a read fails exactly when it
//! reaches an event of a damaged batch, from whatever position, in either
//! direction, through a stream, a category or the global order, and
//! every event it returns is the one written (DURABILITY.md, guarantee 7;
//! DESIGN.md, "The read path").
#![cfg(feature = "sim")]

mod sim_support;

use annal::io::sim::{SimFs, SimImage};
use annal::{Durability, Error, EventData, ExpectedVersion, Options, ReadAll, ReadStream, RecordedEvent, Store};
use sim_support::{dir, flip_payload, open_without_id_window};

const EVENTS: u64 = 240;

fn options() -> Options {
    Options::default()
        .with_durability(Durability::Buffered)
        .with_segment_size_bytes(64 * 1024)
}

/// The stream of the event at `position` when events are appended in
/// batches of `batch`: `S-0` to `S-6`, in turn.
fn stream_of(position: u64, batch: u64) -> String {
    format!("S-{}", (position - 1) / batch % 7)
}

/// A closed store of [`EVENTS`] events appended in batches of `batch`,
/// each to one stream (see [`stream_of`]), the event at position `p` with
/// the data `payload-NNNNNN`. One segment holds them all.
fn store_image(batch: u64) -> SimImage {
    let fs = SimFs::new(1);
    let store = Store::open_with(fs.clone(), dir(), options()).unwrap();
    for first in (1..=EVENTS).step_by(batch as usize) {
        store
            .append(
                &stream_of(first, batch),
                ExpectedVersion::Any,
                (first..first + batch).map(payload),
            )
            .unwrap();
    }
    store.close().unwrap();
    fs.durable_image()
}

fn payload(position: u64) -> EventData {
    EventData::new("T", format!("payload-{position:06}"))
}

/// `image` with one bit flipped in the data of each event of `positions`,
/// opened with no id window (open then reads no event, and the damage is
/// met by the reads under test); `None` when open reported it (it checks
/// the log's last batch).
fn damaged(image: &SimImage, positions: &[u64]) -> Option<Store<SimFs>> {
    let mut image = image.clone();
    for &position in positions {
        flip_payload(&mut image, position);
    }
    open_without_id_window(&image, options())
}

/// Checks an event read at `position` is the one written there.
fn check(e: &RecordedEvent, position: u64, batch: u64) {
    assert_eq!(e.position(), position);
    assert_eq!(e.stream(), stream_of(position, batch));
    assert_eq!(e.data(), format!("payload-{position:06}").as_bytes());
}

/// Reads until the first error: the positions read (each checked), and
/// whether an error (always corruption) ended the read.
fn read_through(events: impl Iterator<Item = annal::Result<RecordedEvent>>, batch: u64) -> (Vec<u64>, bool) {
    let mut got = Vec::new();
    for e in events {
        match e {
            Ok(e) => {
                check(&e, e.position(), batch);
                got.push(e.position());
            }
            Err(Error::Corruption { .. }) => return (got, true),
            Err(other) => panic!("damage surfaced as {other:?}"),
        }
    }
    (got, false)
}

/// With batches of `batch` events and the events of `hit` damaged: every
/// read returns exactly the events up to the first damaged batch in its
/// way, whatever its start and direction.
fn reads_stop_only_at_damaged_batches(batch: u64, hit: &[u64]) {
    let batch_of = |p: u64| (p - 1) / batch;
    let bad = |p: u64| hit.iter().any(|&h| batch_of(h) == batch_of(p));
    let Some(store) = damaged(&store_image(batch), hit) else {
        assert!(bad(EVENTS), "open reported damage before the last batch: {hit:?}");
        return;
    };

    for p in 1..=EVENTS {
        let read = store.read_position(p);
        if bad(p) {
            assert!(
                matches!(read, Err(Error::Corruption { .. })),
                "event {p} of a damaged batch: {read:?}"
            );
        } else {
            check(&read.unwrap().expect("an event"), p, batch);
        }
    }
    for from in (0..=EVENTS).step_by(3) {
        let (got, failed) = read_through(store.read_all(ReadAll::forward().from_position(from)).unwrap(), batch);
        let want: Vec<u64> = (from + 1..=EVENTS).take_while(|&p| !bad(p)).collect();
        assert_eq!(got, want, "forward after {from}, damage at {hit:?}");
        assert_eq!(failed, (from + 1..=EVENTS).any(bad), "forward after {from}");

        // Backward: the events before `from + 1`.
        let (got, failed) = read_through(
            store.read_all(ReadAll::backward().from_position(from + 1)).unwrap(),
            batch,
        );
        let want: Vec<u64> = (1..=from).rev().take_while(|&p| !bad(p)).collect();
        assert_eq!(got, want, "backward up to {from}, damage at {hit:?}");
        assert_eq!(failed, (1..=from).any(bad), "backward up to {from}");
    }
    let (got, _) = read_through(store.read_category("S", 0, None).unwrap(), batch);
    let want: Vec<u64> = (1..=EVENTS).take_while(|&p| !bad(p)).collect();
    assert_eq!(got, want, "category, damage at {hit:?}");
    for s in 0..7 {
        let stream = format!("S-{s}");
        let mine: Vec<u64> = (1..=EVENTS).filter(|&p| stream_of(p, batch) == stream).collect();
        let (got, failed) = read_through(store.read_stream(&stream, ReadStream::forward()).unwrap(), batch);
        let want: Vec<u64> = mine.iter().copied().take_while(|&p| !bad(p)).collect();
        assert_eq!(got, want, "{stream} forward, damage at {hit:?}");
        assert_eq!(failed, mine.iter().any(|&p| bad(p)), "{stream} forward");

        let (got, _) = read_through(store.read_stream(&stream, ReadStream::backward()).unwrap(), batch);
        let want: Vec<u64> = mine.iter().rev().copied().take_while(|&p| !bad(p)).collect();
        assert_eq!(got, want, "{stream} backward, damage at {hit:?}");
    }
}

/// One event per batch: one damaged event costs only itself.
#[test]
fn a_damaged_event_costs_only_itself() {
    for hit in [1, 2, 50, 51, 120, 239, 240] {
        reads_stop_only_at_damaged_batches(1, &[hit]);
    }
}

/// Batches of ten: a damaged event costs its batch (all or nothing, as it
/// was written), and only its batch.
#[test]
fn a_damaged_batch_costs_only_its_events() {
    for hit in [1, 10, 11, 55, 60, 121, 231, 240] {
        reads_stop_only_at_damaged_batches(10, &[hit]);
    }
}

/// Two damaged batches: reads between them and after both see every
/// intact event; each damaged batch is reported where it lies.
#[test]
fn reads_between_and_after_two_damaged_batches() {
    reads_stop_only_at_damaged_batches(10, &[55, 125]);
    reads_stop_only_at_damaged_batches(1, &[30, 31, 200]);
    reads_stop_only_at_damaged_batches(10, &[15, 25, 35]);
}
