//! Filters never hide damage. A filtered read or a category or typed
//! subscription skips the records its filter turns away without making
//! events of them, but still checks them: a damaged record is reported
//! where it lies, after the matches before it, and a subscription stays
//! before it (DESIGN.md, "The read path"; SUBSCRIPTIONS.md, "Damage").
#![cfg(feature = "sim")]

mod sim_support;

use annal::io::sim::{SimFs, SimImage};
use annal::{Durability, Error, EventData, ExpectedVersion, Options, ReadAll, StartFrom, Store, SubscriptionFilter};
use sim_support::{deliveries_before_damage, dir, flip_payload, open_without_id_window};

fn options() -> Options {
    Options::default()
        .with_durability(Durability::Buffered)
        .with_segment_size_bytes(64 * 1024)
}

/// A closed store of `events` events: every 4th in `A-1`, the others in
/// `Other-1`, each with the data `payload-NNNNNN` (its position).
fn store_image(events: u64) -> SimImage {
    let fs = SimFs::new(1);
    let store = Store::open_with(fs.clone(), dir(), options()).unwrap();
    for i in 1..=events {
        let stream = if i % 4 == 0 { "A-1" } else { "Other-1" };
        store
            .append(
                stream,
                ExpectedVersion::Any,
                [EventData::new("T1", format!("payload-{i:06}"))],
            )
            .unwrap();
    }
    store.close().unwrap();
    fs.durable_image()
}

/// `image` with one bit flipped in the data of the event at `position`,
/// opened with no id window, so that open reads no event and the damage
/// is met by the reads under test (or reported at open: `None`).
fn damaged(image: &SimImage, position: u64) -> Option<Store<SimFs>> {
    let mut image = image.clone();
    flip_payload(&mut image, position);
    open_without_id_window(&image, options())
}

/// Damage at and around the subscription pages' edges (256 positions),
/// in records the filters turn away: each subscription delivers the
/// matches before it, then reports it every time it is asked, its
/// position staying before it; filtered and category reads report it.
#[test]
fn damage_in_a_record_a_filter_skips_is_reported() {
    let image = store_image(1000);
    for at in [1u64, 2, 255, 256, 257, 258, 511, 512, 513, 700, 999, 1000] {
        let Some(store) = damaged(&image, at) else {
            continue;
        };
        for from in [StartFrom::Start, StartFrom::After(at.saturating_sub(3))] {
            let filters = [
                SubscriptionFilter::category("A"),
                SubscriptionFilter::category("Nope"),
                SubscriptionFilter::all().event_type("T2"),
            ];
            for filter in filters {
                let mut sub = store.subscribe(filter.clone(), from).unwrap();
                let what = format!("{filter:?} from {from:?}, damage at {at}");
                let got = deliveries_before_damage(&mut sub, 3, at, &what);
                let start = match from {
                    StartFrom::After(p) => p,
                    _ => 0,
                };
                let want: Vec<u64> = if filter == SubscriptionFilter::category("A") {
                    (start + 1..at).filter(|p| p % 4 == 0).collect()
                } else {
                    Vec::new()
                };
                assert_eq!(got, want, "{filter:?} from {from:?}, damage at {at}");
            }
        }
        let read: Result<Vec<_>, _> = store.read_all(ReadAll::forward().category("Nope")).unwrap().collect();
        assert!(
            matches!(read, Err(Error::Corruption { .. })),
            "a filtered read hid the damage at {at}"
        );
        // A category read goes through the index to its own events only:
        // it meets the damage exactly when the damaged event is one of them.
        let read: Result<Vec<_>, _> = store.read_category("A", 0, None).unwrap().collect();
        if at % 4 == 0 {
            assert!(read.is_err(), "a category read hid the damage at {at}");
        } else {
            let got: Vec<u64> = read.unwrap().iter().map(|e| e.position()).collect();
            assert_eq!(got, (4..=1000).step_by(4).collect::<Vec<u64>>(), "damage at {at}");
        }
    }
}

/// A page that holds a match and then a damaged record: the subscription
/// delivers the match, then stops before the damage, never taking the
/// page as read through.
#[test]
fn damage_after_a_match_in_the_same_page_is_reported() {
    let Some(store) = damaged(&store_image(300), 262) else {
        panic!("the damage was found at open");
    };
    let mut sub = store.subscribe_category("A", StartFrom::Start).unwrap();
    let got = deliveries_before_damage(&mut sub, 2, 262, "damage at 262");
    assert_eq!(got, (4..262).step_by(4).collect::<Vec<u64>>());
}
