//! Arbitrary bytes as an index file: decoding never panics nor allocates
//! beyond what the input justifies, and what it accepts is self-consistent.
#![no_main]

use annal::index::file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = file::decode_checkpoint(data);
    if let Ok((index, checkpoint)) = file::decode(&bytes::Bytes::copy_from_slice(data)) {
        assert_eq!(index.last_position(), checkpoint.last_position);
        // Re-encoding what was accepted decodes to the same checkpoint.
        let again = file::encode(&index, &checkpoint);
        let (index2, checkpoint2) = file::decode(&again.into()).expect("re-encoded index decodes");
        assert_eq!(checkpoint2, checkpoint);
        assert_eq!(index2.last_position(), index.last_position());
        assert_eq!(index2.stream_count(), index.stream_count());
    }
});
