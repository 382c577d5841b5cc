//! The periodic and buffered modes sync the log in the background every
//! 8 MiB of data written (besides the periodic mode's interval), so that a
//! segment's seal, which the appender waits for, finds at most that much
//! left to flush. Seen from outside: with no `sync` call and no interval
//! passing, what a power loss leaves grows step by step as appends go on.
#![cfg(feature = "sim")]

mod sim_support;

use std::time::{Duration, Instant};

use annal::io::sim::SimFs;
use annal::{Durability, EventData, ExpectedVersion, Options, Store};
use sim_support::dir;

/// Events of 64 KiB of data.
const EVENT_BYTES: usize = 64 * 1024;

/// Events that a power loss would leave now (the durable image, opened).
fn durable_events(fs: &SimFs, options: &Options) -> u64 {
    let image = fs.durable_image();
    let store = Store::open_with(SimFs::from_image(&image, 1), dir(), options.clone()).expect("open the durable image");
    store.last_position()
}

#[test]
fn non_durable_modes_sync_every_step_of_data_in_the_background() {
    // An interval that never passes during the test: only the steps sync.
    for durability in [Durability::Buffered, Durability::Periodic(Duration::from_secs(3600))] {
        let fs = SimFs::new(7);
        let options = Options::default().with_durability(durability);
        let store = Store::open_with(fs.clone(), dir(), options.clone()).expect("open");
        let data = vec![b'x'; EVENT_BYTES];
        // 9 MiB: past the first 8 MiB step.
        let events = 9 * 1024 * 1024 / EVENT_BYTES as u64;
        for _ in 0..events {
            store
                .append("Blob-1", ExpectedVersion::Any, [EventData::new("Blob", data.clone())])
                .expect("append");
        }
        // The sync runs on another thread: wait for it (the 8 MiB of events
        // that crossed the step are durable once it has run).
        let step_events = 8 * 1024 * 1024 / (EVENT_BYTES as u64 + 128);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut durable = durable_events(&fs, &options);
        while durable < step_events && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            durable = durable_events(&fs, &options);
        }
        assert!(
            durable >= step_events,
            "{durability:?}: {durable} of {events} events durable without a sync call, want at least {step_events}"
        );
        // Nothing was synced past what had been written when it ran.
        assert!(durable <= events, "{durability:?}");
        store.close().expect("close");
        assert_eq!(durable_events(&fs, &options), events, "{durability:?}: all after close");
    }
}
