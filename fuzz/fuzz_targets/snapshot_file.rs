//! Arbitrary bytes as a snapshot file: the header check, the record scan
//! and the CRC-less peek never panic nor allocate beyond the input, every
//! record the scan accepts decodes again, in bounds, to what it reported,
//! and the peek's walk (the append guard's) reports each of them too.
#![no_main]

use annal::snapshot::file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = file::decode_header(data);
    let scan = file::scan(data);
    assert!(scan.end as usize <= data.len());
    let mut peeked = Vec::new();
    file::peek_records(data, |offset, stream, version| {
        assert!((offset as usize) < data.len());
        peeked.push((offset, stream.to_string(), version));
    });
    for r in &scan.records {
        assert!(
            peeked.contains(&(r.offset, r.stream.clone(), r.version)),
            "the peek missed the record at {}",
            r.offset
        );
    }
    for r in &scan.records {
        let start = r.offset as usize;
        assert!(start + r.len as usize <= scan.end as usize);
        let d = file::decode_record(&data[start..]).expect("a scanned record decodes");
        assert_eq!(
            (d.stream, d.version, d.schema_version, d.len),
            (r.stream.as_str(), r.version, r.schema_version, r.len)
        );
        let again =
            file::encode_record(d.stream, d.version, d.event_id, d.schema_version, d.data).expect("re-encodes");
        assert_eq!(&again[..], &data[start..start + r.len as usize]);
    }
    let _ = file::decode_record(data);
});
