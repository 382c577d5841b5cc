//! Arbitrary bytes as a batch frame: checking it, and decoding every
//! record it accepts, never panics and never reads out of bounds.
#![no_main]

use annal::log::frame;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    let mut offsets = Vec::new();
    if let Ok(header) = frame::check_batch(data, |r, _| offsets.push(r.offset as usize)) {
        assert!(header.frame_len as usize <= data.len());
        for (k, offset) in offsets.into_iter().enumerate() {
            let e = frame::decode_checked_record(&bytes, offset, header.first_position + k as u64)
                .expect("a checked record decodes");
            let _ = (
                e.stream(),
                e.event_type(),
                e.data(),
                e.metadata(),
                e.id(),
                e.timestamp_micros(),
            );
        }
    }
});
