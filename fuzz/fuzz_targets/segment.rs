//! Arbitrary bytes as a segment file: header decoding and the batch scan
//! that recovery runs never panic, and the scan's verdict is consistent.
#![no_main]

use std::path::Path;

use annal::log::segment::{self, SEGMENT_HEADER_BYTES, ScanEnd, SegmentHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = SegmentHeader::decode(data, Path::new("fuzz.seg"));
    let mut last_end = SEGMENT_HEADER_BYTES;
    let end = segment::scan(data, SEGMENT_HEADER_BYTES, |at, header, records| {
        assert_eq!(at, last_end, "batches are contiguous");
        assert_eq!(records.len(), header.record_count as usize);
        last_end = at + u64::from(header.frame_len);
    });
    // Whatever the verdict, it is about the end of the last valid batch.
    match end {
        ScanEnd::Clean { offset } => assert_eq!(offset, last_end),
        ScanEnd::TornTail { offset, dirty_end, .. } => assert!(offset == last_end && offset < dirty_end),
        ScanEnd::Corrupt { offset, next, .. } => {
            assert!(offset == last_end && offset < next);
            // What follows the damage is a valid batch, one that could be
            // the log's next.
            let at = usize::try_from(next).unwrap();
            assert!(annal::log::frame::check_batch(&data[at..], |_, _| {}).is_ok());
        }
    }
});
