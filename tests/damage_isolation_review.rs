//! Review tests for reads past a damaged batch (src/log/view.rs,
//! `verify_past_damage`): adversarial damage the bit-flip tests of
//! tests/damage_isolation.rs do not reach. A back pointer damaged so that
//! it leads to a valid batch frame that an event's payload carries; a
//! later damaged batch whose frame length or magic is damaged (cut short,
//! or read as the end of the log); the offset each error names; events
//! appended after the damage, read while appends go on, from several
//! threads; reads in a scattered order (DURABILITY.md, guarantee 7).
#![cfg(feature = "sim")]

mod sim_support;

use annal::io::sim::{SimFs, SimImage};
use annal::log::frame::{self, RecordInput};
use annal::log::segment::SEGMENT_HEADER_BYTES;
use annal::{Durability, Error, EventData, ExpectedVersion, Options, ReadAll, ReadStream, RecordedEvent, Store};
use sim_support::dir;

fn options() -> Options {
    Options::default()
        .with_durability(Durability::Buffered)
        .with_segment_size_bytes(64 * 1024)
}

fn payload(position: u64) -> EventData {
    EventData::new("T", format!("payload-{position:06}"))
}

/// A batch frame of the segment: where it starts, its first position and
/// where its records start (all in the segment).
#[derive(Clone, Debug)]
struct Batch {
    start: usize,
    first_position: u64,
    records: Vec<usize>,
}

/// The batches of a segment, walked from its header while they are valid.
fn batches(bytes: &[u8]) -> Vec<Batch> {
    let mut at = SEGMENT_HEADER_BYTES as usize;
    let mut out = Vec::new();
    loop {
        let mut records = Vec::new();
        let Ok(header) = frame::check_batch(&bytes[at..], |r, _| records.push(at + r.offset as usize)) else {
            return out;
        };
        out.push(Batch {
            start: at,
            first_position: header.first_position,
            records,
        });
        at += header.frame_len as usize;
    }
}

/// Flips a bit in the first event data (`payload-...`) of the batch at
/// `start`.
fn flip_data(bytes: &mut [u8], start: usize) {
    let at = start + bytes[start..].windows(8).position(|w| w == b"payload-").unwrap();
    bytes[at + 3] ^= 0x20;
}

/// The one segment of `image` (every store here fits in one).
fn segment(image: &mut SimImage) -> &mut Vec<u8> {
    let mut segments = image
        .files
        .iter_mut()
        .filter(|(path, _)| path.extension().is_some_and(|e| e == "seg"));
    let (_, bytes) = segments.next().expect("a segment");
    assert!(segments.next().is_none(), "one segment");
    bytes
}

/// Opens `image` with no id window: open reads no event, the damage is
/// met by the reads under test.
fn open(image: &SimImage) -> Store<SimFs> {
    Store::open_with(
        SimFs::from_image(image, 2),
        dir(),
        options().with_idempotency_window_events(0),
    )
    .expect("open")
}

/// A closed store of one-event batches, the event at `p` with the data
/// `payload-NNNNNN`, to the stream `S-{p % 3}`, positions `1..=events`.
fn one_event_batches(events: u64) -> SimImage {
    let fs = SimFs::new(1);
    let store = Store::open_with(fs.clone(), dir(), options()).unwrap();
    for p in 1..=events {
        store
            .append(&format!("S-{}", p % 3), ExpectedVersion::Any, [payload(p)])
            .unwrap();
    }
    store.close().unwrap();
    fs.durable_image()
}

fn check(e: &RecordedEvent, position: u64) {
    assert_eq!(e.position(), position);
    assert_eq!(
        e.data(),
        format!("payload-{position:06}").as_bytes(),
        "event {position}"
    );
}

/// The offset an error names, which must be corruption.
fn corruption_at(read: annal::Result<Option<RecordedEvent>>, what: &str) -> u64 {
    match read {
        Err(Error::Corruption { offset, .. }) => offset,
        other => panic!("{what}: expected corruption, got {other:?}"),
    }
}

/// The record's back pointer: 4 bytes, 8 bytes into the record.
const BATCH_BACK_AT: usize = 8;

/// A damaged batch whose second event's back pointer was damaged to
/// lead to a valid batch frame carried in its first event's data (a
/// frame that claims the second event's position, as a client may write
/// any bytes as data): the frame passes every check, but holds no record
/// at the second event's offset, so the second event is not read through
/// it. (Kills: accepting the record's batch without `holds`, or with
/// `holds` true for any record at or before the offset.)
#[test]
fn a_back_pointer_that_leads_to_a_frame_carried_as_data_is_not_followed() {
    // Positions 1..=5, then the batch of 6 and 7 (6 carries the frame),
    // then 8..=12.
    let fs = SimFs::new(1);
    let store = Store::open_with(fs.clone(), dir(), options()).unwrap();
    for p in 1..=5 {
        store.append("A-1", ExpectedVersion::Any, [payload(p)]).unwrap();
    }
    let forged = EventData::new("T", "payload-000007");
    let mut carried = b"carry:".to_vec();
    frame::encode_batch(
        &mut carried,
        7,
        0,
        [RecordInput {
            stream: "B-1",
            version: 2,
            event: &forged,
        }],
    );
    let carried_frame = carried[6..].to_vec();
    store
        .append("B-1", ExpectedVersion::Any, [EventData::new("T", carried), payload(7)])
        .unwrap();
    for p in 8..=12 {
        store.append("C-1", ExpectedVersion::Any, [payload(p)]).unwrap();
    }
    store.close().unwrap();
    let mut image = fs.durable_image();
    let bytes = segment(&mut image);
    let all = batches(bytes);
    assert_eq!(all.len(), 11);
    let damaged = all[5].clone();
    assert_eq!((damaged.first_position, damaged.records.len()), (6, 2));
    let seventh = damaged.records[1];
    let frame_at = bytes
        .windows(carried_frame.len())
        .position(|w| w == carried_frame.as_slice())
        .expect("the carried frame");
    assert!(frame_at > damaged.start && frame_at < seventh);
    // The carried frame is valid where it lies.
    assert!(frame::check_batch(&bytes[frame_at..], |_, _| {}).is_ok());
    // Event 7's back pointer now leads to the carried frame, and its data
    // is damaged too.
    let back = u32::try_from(seventh - frame_at).unwrap();
    bytes[seventh + BATCH_BACK_AT..seventh + BATCH_BACK_AT + 4].copy_from_slice(&back.to_le_bytes());
    let data_at = seventh
        + bytes[seventh..]
            .windows(14)
            .position(|w| w == b"payload-000007")
            .unwrap();
    bytes[data_at + 3] ^= 0x20;

    let store = open(&image);
    for p in 1..=12 {
        let read = store.read_position(p);
        if p == 6 || p == 7 {
            assert_eq!(corruption_at(read, &format!("event {p}")), damaged.start as u64);
        } else {
            check(&read.unwrap().unwrap(), p);
        }
    }
    // Backward from the end, then event 7 through its stream (the run
    // checked past the damage starts after it), and forward from before.
    let got: Vec<_> = store.read_all(ReadAll::backward()).unwrap().collect();
    assert_eq!(got.len(), 6, "{got:?}");
    assert!(matches!(got[5], Err(Error::Corruption { .. })));
    let mut b = store.read_stream("B-1", ReadStream::backward()).unwrap();
    assert!(matches!(b.next(), Some(Err(Error::Corruption { .. }))));
    let got: Vec<_> = store.read_all(ReadAll::forward()).unwrap().collect();
    assert_eq!(got.len(), 6);
    assert!(matches!(got[5], Err(Error::Corruption { .. })));
    assert_eq!(
        corruption_at(store.read_position(7), "event 7 again"),
        damaged.start as u64
    );
}

/// What a later damaged batch's damage does to its frame.
#[derive(Clone, Copy, Debug)]
enum LaterDamage {
    /// A bit of an event's data: the batch is invalid.
    Data,
    /// Its frame length, made longer than the segment: cut short.
    FrameLen,
    /// Its magic zeroed: read as the end of the log.
    Magic,
}

/// Positions 1..=40 in one-event batches; event 10's data damaged, and
/// event 25's batch damaged as `later` says (with its data damaged too,
/// so that a read that let it through would return wrong bytes). The
/// image, the two damaged batches' offsets.
fn two_damaged(later: LaterDamage) -> (SimImage, u64, u64) {
    let mut image = one_event_batches(40);
    let bytes = segment(&mut image);
    let all = batches(bytes);
    assert_eq!(all.len(), 40);
    let (first, second) = (all[9].clone(), all[24].clone());
    for b in [&first, &second] {
        flip_data(bytes, b.start);
    }
    match later {
        LaterDamage::Data => {}
        LaterDamage::FrameLen => {
            bytes[second.start + 4..second.start + 8].copy_from_slice(&0x0010_0000u32.to_le_bytes())
        }
        LaterDamage::Magic => bytes[second.start..second.start + 4].fill(0),
    }
    (image, first.start as u64, second.start as u64)
}

/// A later damaged batch, whatever its damage, fails its events however
/// the read reaches it: on its own (no run yet), at the end of a run
/// extended up to it, from after it. (Kills: a record's own batch that is
/// cut short or reads as the end of the log accepted; the run extended
/// past a failed check.)
#[test]
fn a_later_damaged_batch_fails_its_events_whatever_its_damage() {
    for later in [LaterDamage::Data, LaterDamage::FrameLen, LaterDamage::Magic] {
        let (image, _, _) = two_damaged(later);
        let bad = |p: u64| p == 10 || p == 25;
        // Alone, first thing read after open.
        let store = open(&image);
        assert!(store.read_position(25).is_err(), "{later:?}: event 25 alone");
        // Every order: forward, backward, and from the middle out.
        let orders: [Vec<u64>; 3] = [
            (1..=40).collect(),
            (1..=40).rev().collect(),
            (11..=40).chain((1..=10).rev()).collect(),
        ];
        for order in orders {
            let store = open(&image);
            for &p in &order {
                let read = store.read_position(p);
                if bad(p) {
                    assert!(
                        matches!(read, Err(Error::Corruption { .. })),
                        "{later:?}: event {p}: {read:?}"
                    );
                } else {
                    check(&read.unwrap().unwrap(), p);
                }
            }
        }
        let store = open(&image);
        for from in [0, 5, 10, 11, 20, 24, 25, 30] {
            let mut got = Vec::new();
            let mut failed = false;
            for e in store.read_all(ReadAll::forward().from_position(from)).unwrap() {
                match e {
                    Ok(e) => {
                        check(&e, e.position());
                        got.push(e.position());
                    }
                    Err(Error::Corruption { .. }) => {
                        failed = true;
                        break;
                    }
                    Err(other) => panic!("{other:?}"),
                }
            }
            let want: Vec<u64> = (from + 1..=40).take_while(|&p| !bad(p)).collect();
            assert_eq!(got, want, "{later:?}: forward after {from}");
            assert_eq!(failed, (from + 1..=40).any(bad), "{later:?}: forward after {from}");
        }
    }
}

/// Each damaged batch is named where it lies: the error of an event of
/// the later damaged batch names that batch, not the first one. (Kills:
/// the later batch's own error replaced by the first damage.)
#[test]
fn a_later_damaged_batch_is_named_where_it_lies() {
    let (image, first, second) = two_damaged(LaterDamage::Data);
    // Alone; after a run extended up to it; after reads past it.
    let store = open(&image);
    assert_eq!(corruption_at(store.read_position(25), "event 25 alone"), second);
    assert_eq!(corruption_at(store.read_position(10), "event 10"), first);
    let store = open(&image);
    for p in 11..=24 {
        check(&store.read_position(p).unwrap().unwrap(), p);
    }
    assert_eq!(corruption_at(store.read_position(25), "event 25 after 11..=24"), second);
    for p in 26..=40 {
        check(&store.read_position(p).unwrap().unwrap(), p);
    }
    assert_eq!(corruption_at(store.read_position(25), "event 25 after 26..=40"), second);
}

/// The same for a later batch cut short or read as the end of the log:
/// the error names that batch, not the first damaged one.
#[test]
fn a_later_batch_cut_short_is_named_where_it_lies() {
    for later in [LaterDamage::FrameLen, LaterDamage::Magic] {
        let (image, _, second) = two_damaged(later);
        let store = open(&image);
        assert_eq!(
            corruption_at(store.read_position(25), &format!("{later:?}")),
            second,
            "{later:?}"
        );
    }
}

/// Events appended after the damage (the writer cannot move the
/// watermark, stuck at the damage) are read right, while appends go on,
/// from several threads, in every direction.
#[test]
fn events_appended_after_damage_are_read_while_appends_go_on() {
    let mut image = one_event_batches(30);
    let bytes = segment(&mut image);
    let all = batches(bytes);
    flip_data(bytes, all[9].start);
    let store = open(&image);
    const MORE: u64 = 150;
    std::thread::scope(|s| {
        let store = &store;
        s.spawn(move || {
            for p in 31..=30 + MORE {
                store
                    .append(&format!("S-{}", p % 3), ExpectedVersion::Any, [payload(p)])
                    .unwrap();
            }
        });
        for t in 0..3u64 {
            s.spawn(move || {
                let mut seed = t * 7919 + 13;
                for _ in 0..400 {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let last = store.read_all(ReadAll::backward()).unwrap().next();
                    let Some(Ok(last)) = last else {
                        panic!("last event: {last:?}")
                    };
                    let head = last.position();
                    check(&last, head);
                    let p = 1 + (seed >> 33) % head;
                    let read = store.read_position(p);
                    if p == 10 {
                        assert!(matches!(read, Err(Error::Corruption { .. })), "{read:?}");
                    } else {
                        check(&read.unwrap().unwrap(), p);
                    }
                    // A short run in either direction from `p`.
                    let forward = seed & (1 << 20) != 0;
                    let options = if forward {
                        ReadAll::forward().from_position(p)
                    } else {
                        ReadAll::backward().from_position(p)
                    };
                    for e in store.read_all(options).unwrap().take(5) {
                        match e {
                            Ok(e) => {
                                assert_ne!(e.position(), 10);
                                check(&e, e.position());
                            }
                            Err(Error::Corruption { .. }) => break,
                            Err(other) => panic!("{other:?}"),
                        }
                    }
                }
            });
        }
    });
    let got: Vec<u64> = store
        .read_all(ReadAll::forward().from_position(10))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            check(&e, e.position());
            e.position()
        })
        .collect();
    assert_eq!(got, (11..=30 + MORE).collect::<Vec<_>>());
}

/// Reads in a scattered order past the damage, around a second damaged
/// batch: the runs of batches the view keeps past the first are made,
/// grown from either side, joined and, past eight, dropped, never across
/// the second; every read still gets the event written, or the damage of
/// its own batch, named where that batch starts.
#[test]
fn scattered_reads_past_the_damage_are_each_right() {
    let mut image = one_event_batches(200);
    let bytes = segment(&mut image);
    let all = batches(bytes);
    for b in [49, 119] {
        flip_data(bytes, all[b].start);
    }
    let store = open(&image);
    let mut seed = 7u64;
    for _ in 0..3 {
        let mut order: Vec<u64> = (1..=200).collect();
        for i in (1..order.len()).rev() {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (seed >> 33) as usize % (i + 1));
        }
        for p in order {
            let read = store.read_position(p);
            if p == 50 || p == 120 {
                let at = corruption_at(read, &format!("event {p}"));
                assert_eq!(at, all[p as usize - 1].start as u64, "event {p}");
            } else {
                check(&read.unwrap().unwrap(), p);
            }
        }
    }
}
