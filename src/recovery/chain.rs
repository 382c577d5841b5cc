//! The checks that tie the log to what was saved about it: the durable
//! floor an index file's header records (the log must reach it, and hold
//! there the batch the header names), and the chain of segments (each
//! segment's header names where the previous one's last batch ended, and
//! its CRC). Damage a crash cannot explain is refused, never cut.

use uuid::Uuid;

use super::Found;
use crate::error::Result;
use crate::index::Index;
use crate::index::file::{self as index_file, Checkpoint};
use crate::io::FileSystem;
use crate::log::frame;
use crate::log::segment::{self, SEGMENT_HEADER_BYTES, SegmentHeader};

/// Where the log was durable when the index file was saved, from the index
/// file's header alone (valid header CRC, same store), even when the rest
/// of the file cannot be used. The store syncs the log before it saves an
/// index file, so the log must reach this point: damage before it is
/// corruption of acknowledged data, never a torn tail to cut.
pub(super) fn durable_floor<F: FileSystem>(bytes: &[u8], found: &[Found<F>]) -> Option<Checkpoint> {
    durable_floor_of(bytes, found.first()?.header.store_id)
}

/// [`durable_floor`] from an index file's bytes and the log's store id
/// (also used by `verify` and `repair`).
pub(crate) fn durable_floor_of(bytes: &[u8], store_id: Uuid) -> Option<Checkpoint> {
    let (checkpoint, _, _) = index_file::decode_checkpoint(bytes).ok()?;
    (checkpoint.store_id == store_id && checkpoint.last_position > 0 && checkpoint.end_segment > 0)
        .then_some(checkpoint)
}

/// Where and why a log that reaches the durable `floor` holds other data
/// there than the batch the index file recorded (its last position, end
/// and CRC): acknowledged events were replaced, by a segment restored from
/// another copy of the store, say. `index` is the log's, `map` the floor
/// segment's bytes. `None` when the log holds that very batch. (A log that
/// falls short of the floor is [`short_of_floor`]'s to report.)
pub(crate) fn floor_batch_replaced(floor: &Checkpoint, index: &Index, map: &[u8]) -> Option<(u64, String)> {
    let location = index.location(floor.last_position);
    let holds = location
        .filter(|l| l.segment == floor.end_segment)
        .map(|l| log_holds_batch(floor, l.offset, map));
    match holds {
        Some(Ok(())) => None,
        Some(Err((at, _))) => Some((at, replaced_reason(floor))),
        None => Some((floor.end_offset, replaced_reason(floor))),
    }
}

fn replaced_reason(floor: &Checkpoint) -> String {
    format!(
        "the index file records the batch of events up to position {} ending at offset {} as durable, \
         but the log holds other data there: acknowledged events were replaced",
        floor.last_position, floor.end_offset
    )
}

/// Why segment `previous` (its bytes `map`) does not end with the batch
/// that the next segment's header (`next`) records; `None` when it does,
/// or when the header records none (segment 1's, or one written before
/// annal recorded it). The previous segment's last batch is the one
/// holding the position before `next`'s first, found through `index`.
///
/// Its header's end and CRC fields are compared first, without checking
/// its CRCs (reads do that, lazily). When they differ: a valid batch there
/// means another segment; an invalid one is damage, which reads report
/// where it lies (a check at open must not make one damaged batch cost the
/// whole store), as long as the file is as long as the header records (a
/// sealed segment ends at its last batch). A file of another length may
/// still be damage, cut short or with bytes lost or added: the open asks
/// [`length_damage`] before it reports this reason. (Also used by
/// `verify` and `repair`.)
pub(crate) fn chain_broken(next: &SegmentHeader, index: &Index, previous: u64, map: &[u8]) -> Option<String> {
    if next.previous_end == 0 {
        return None;
    }
    let recorded = (next.previous_end, next.previous_crc);
    let batch_at = match last_batch_start(previous, next.first_position, index, map) {
        LastBatch::At(at) => Some(at),
        LastBatch::Unreadable => None,
        // Annal never seals such a segment.
        LastBatch::NoBatch => {
            return ((SEGMENT_HEADER_BYTES, 0) != recorded).then(|| chain_reason(previous, recorded, None));
        }
    };
    let fields = batch_at.and_then(|at| {
        let header = frame::parse_batch_header(map.get(at..)?).ok()?;
        Some((at as u64 + u64::from(header.frame_len), header.crc))
    });
    if fields == Some(recorded) {
        return None;
    }
    let valid = batch_at
        .and_then(|at| frame::check_batch(map.get(at..)?, |_, _| {}).ok())
        .is_some();
    if !valid && map.len() as u64 == next.previous_end {
        return None;
    }
    Some(chain_reason(previous, recorded, fields.filter(|_| valid)))
}

/// Why segment `previous`'s own valid batches (its bytes `map`) contradict
/// what the next segment's header (`next`) records of its end, found
/// without the log before it, so also past damage that stops a walk
/// (`repair` checks it before it changes anything): no valid batch ends
/// where the header records, with its CRC, while a valid batch holds the
/// position before the next segment's first, or a later one. No crash,
/// and no damage to either segment, gets there: one of the two comes from
/// another copy of the store. `None` when the recorded batch is there, or
/// when no valid batch tells (the batch there damaged, the segment cut
/// short), or when the header records none.
pub(crate) fn chain_contradicted(next: &SegmentHeader, previous: u64, map: &[u8]) -> Option<String> {
    if next.previous_end == 0 {
        return None;
    }
    let recorded = (next.previous_end, next.previous_crc);
    let last_wanted = next.first_position.checked_sub(1)?;
    let mut found = None;
    let mut as_recorded = false;
    segment::walk_valid_frames(map, SEGMENT_HEADER_BYTES as usize, |step| {
        if let segment::Frame::Valid(at, batch, _) = step {
            let end = (at + batch.frame_len as usize) as u64;
            let last = segment::last_position_of(batch);
            if (end, batch.crc) == recorded {
                as_recorded = true;
                return std::ops::ControlFlow::Break(());
            }
            // The very batch recorded, moved by bytes lost or added before
            // it (damage, which the walk reports where it lies; its CRC
            // covers its positions and events), tells nothing; a later
            // batch after it still does.
            if batch.crc == recorded.1 && last == last_wanted {
                return std::ops::ControlFlow::Continue(());
            }
            if last >= last_wanted && found.is_none() {
                found = Some((end, batch.crc));
            }
        }
        std::ops::ControlFlow::Continue(())
    });
    if as_recorded {
        return None;
    }
    found.map(|found| chain_reason(previous, recorded, Some(found)))
}

/// Where and why segment `previous` (its bytes `map`), whose end the next
/// segment's header (`next`) does not find as it records, was cut short,
/// or lost bytes inside it: its file is shorter than that header records,
/// none of its own valid batches says that it is another copy's segment
/// (see [`chain_contradicted`]), its valid batches stop at invalid bytes
/// (a batch cut short, or damaged: another copy's sealed segment ends
/// with a whole batch), and the index, loaded from the index file, knows
/// the segment as the bytes left show it: the record it puts last in the
/// segment lies at or past where the valid batches stop, and the last of
/// those batches ends with the very record the index has for its last
/// position. The offset is where the valid batches stop. `None`
/// otherwise, a cut between two batches included (nothing tells it from
/// another copy's shorter segment): then [`chain_broken`]'s reason
/// stands, which names both.
pub(crate) fn length_damage(next: &SegmentHeader, index: &Index, previous: u64, map: &[u8]) -> Option<(u64, String)> {
    let len = map.len() as u64;
    if next.previous_end == 0 || len >= next.previous_end || chain_contradicted(next, previous, map).is_some() {
        return None;
    }
    let last_indexed = index.location(next.first_position.checked_sub(1)?)?;
    // Where the valid batches stop, and the last record before that:
    // (its position, its offset); and whether damage stops them.
    let mut valid_end = SEGMENT_HEADER_BYTES;
    let mut last_record = None;
    let mut damaged = false;
    segment::walk_valid_frames(map, SEGMENT_HEADER_BYTES as usize, |step| match step {
        segment::Frame::Valid(at, batch, records) => {
            valid_end = (at + batch.frame_len as usize) as u64;
            last_record = records
                .last()
                .map(|r| (segment::last_position_of(batch), at as u64 + u64::from(r.offset)));
            std::ops::ControlFlow::Continue(())
        }
        segment::Frame::Skipped(_) => {
            damaged = true;
            std::ops::ControlFlow::Break(())
        }
    });
    // Whole batches up to the file's end are what another copy's shorter
    // segment holds too (even of the same layout): nothing tells a cut
    // between two batches from it.
    let agrees = damaged
        && last_indexed.segment == previous
        && last_indexed.offset >= valid_end
        && last_record.is_none_or(|(position, offset)| {
            index
                .location(position)
                .is_some_and(|l| l.segment == previous && l.offset == offset)
        });
    agrees.then(|| {
        (
            valid_end,
            format!(
                "sealed segment cut short, or bytes lost in it: the file is {len} bytes long, but the next \
                 segment's header records its last batch ending at offset {}; its valid batches stop here",
                next.previous_end
            ),
        )
    })
}

/// The reason for a broken chain: what the next segment's header records
/// of segment `previous`, and what its last batch is (`found`, when valid).
fn chain_reason(previous: u64, recorded: (u64, u32), found: Option<(u64, u32)>) -> String {
    // Without a valid batch there, the previous segment may also have
    // lost its end: nothing tells that from another copy's segment.
    let found = match found {
        Some((end, crc)) => format!("its last batch ends at {end} with CRC {crc:#010x}: one"),
        None => "it holds no valid batch there: it was cut short (its end lost), or one".to_string(),
    };
    format!(
        "segment header: the previous segment ({}) should end with a batch ending at offset {} with CRC {:#010x}, \
         but {found} of the two segments comes from another copy of the store",
        segment::file_name(previous),
        recorded.0,
        recorded.1,
    )
}

/// Where the last batch of segment `previous` (its bytes `map`) ends, and
/// its CRC field, given the first position of the segment after it: the
/// batch holding the position before that one, found through `index`;
/// (64, 0) when that position lies in an earlier segment (this one holds
/// no batch). `None` when the batch there is not valid.
pub(crate) fn last_batch_of(previous: u64, next_first_position: u64, index: &Index, map: &[u8]) -> Option<(u64, u32)> {
    match last_batch_start(previous, next_first_position, index, map) {
        LastBatch::At(at) => {
            let batch = frame::check_batch(map.get(at..)?, |_, _| {}).ok()?;
            Some((at as u64 + u64::from(batch.frame_len), batch.crc))
        }
        LastBatch::NoBatch => Some((SEGMENT_HEADER_BYTES, 0)),
        LastBatch::Unreadable => None,
    }
}

/// Where segment `previous`'s last batch starts (see [`last_batch_of`]).
enum LastBatch {
    /// At this offset of the segment, by the back pointer of its record
    /// of the position before the next segment's first (not checked).
    At(usize),
    /// That position lies in an earlier segment: this one holds no batch.
    NoBatch,
    /// No record header where the index puts that position.
    Unreadable,
}

fn last_batch_start(previous: u64, next_first_position: u64, index: &Index, map: &[u8]) -> LastBatch {
    let Some(last) = next_first_position.checked_sub(1) else {
        return LastBatch::NoBatch;
    };
    match index.location(last) {
        Some(l) if l.segment == previous => usize::try_from(l.offset)
            .ok()
            .and_then(|record_at| {
                let record = map.get(record_at..).and_then(frame::parse_record_header)?;
                record_at.checked_sub(record.batch_back as usize)
            })
            .map_or(LastBatch::Unreadable, LastBatch::At),
        _ => LastBatch::NoBatch,
    }
}

/// Whether the record at `record_at` in `map` belongs to the batch that
/// `checkpoint` recorded: a valid batch holding its last position, ending
/// at its end offset, with its CRC. The error gives the batch's offset (or
/// the record's, when no batch is found) and the reason.
pub(super) fn log_holds_batch(checkpoint: &Checkpoint, record_at: u64, map: &[u8]) -> Result<(), (u64, String)> {
    let not_in_log = |why: &str| (record_at, why.to_string());
    let record_at = usize::try_from(record_at).map_err(|_| not_in_log("offset out of range"))?;
    let record = map
        .get(record_at..)
        .and_then(frame::parse_record_header)
        .ok_or_else(|| not_in_log("last event not in the log"))?;
    let batch_at = record_at
        .checked_sub(record.batch_back as usize)
        .ok_or_else(|| not_in_log("last event not in the log"))?;
    let header = frame::check_batch(&map[batch_at..], |_, _| {})
        .map_err(|_| not_in_log("the index file's last batch is not in the log"))?;
    let last = header.first_position.saturating_add(u64::from(header.record_count) - 1);
    if header.crc != checkpoint.last_batch_crc
        || last != checkpoint.last_position
        || batch_at as u64 + u64::from(header.frame_len) != checkpoint.end_offset
    {
        return Err((
            batch_at as u64,
            "index file does not match the log (stale or ahead)".into(),
        ));
    }
    Ok(())
}

/// Why a log whose last segment is `segment`, with valid data up to `end`,
/// lost acknowledged events, given the durable `floor` (segment, offset);
/// `None` when it reaches the floor. (Also used by `verify` and `repair`.)
pub(crate) fn short_of_floor(floor: &Checkpoint, segment: u64, end: u64) -> Option<String> {
    let (floor_segment, floor_offset) = (floor.end_segment, floor.end_offset);
    if floor_segment > segment {
        Some(format!(
            "valid data ends in this segment, but the index file records durable data in segment {floor_segment}"
        ))
    } else if floor_segment == segment && end < floor_offset {
        Some(format!(
            "valid data ends here, but the index file records durable data up to offset {floor_offset}; \
             acknowledged events are damaged or missing"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventData;
    use crate::log::frame::{RecordInput, encode_batch};

    /// A segment's bytes: a header's worth of ones (never read here), then
    /// one single-event batch for each of `positions`, and `zeros` zero
    /// bytes; with the (end, CRC) of each batch.
    fn segment_of(positions: &[u64], zeros: usize) -> (Vec<u8>, Vec<(u64, u32)>) {
        let mut map = vec![1u8; SEGMENT_HEADER_BYTES as usize];
        let mut ends = Vec::new();
        let event = EventData::new("T", &b"{}"[..]);
        for &position in positions {
            let input = RecordInput {
                stream: "s",
                version: 1,
                event: &event,
            };
            let start = map.len();
            encode_batch(&mut map, position, 0, [input]);
            let crc = frame::parse_batch_header(&map[start..])
                .map(|h| h.crc)
                .unwrap_or_default();
            ends.push((map.len() as u64, crc));
        }
        map.extend(std::iter::repeat_n(0, zeros));
        (map, ends)
    }

    fn next_header(first_position: u64, (previous_end, previous_crc): (u64, u32)) -> SegmentHeader {
        SegmentHeader {
            store_id: Uuid::nil(),
            segment_id: 2,
            first_position,
            previous_end,
            previous_crc,
        }
    }

    #[test]
    fn a_segment_of_another_copy_is_told_by_the_batches_before_it() {
        let (map, ends) = segment_of(&[1, 2, 3], 100);
        // The recorded last batch is there.
        assert_eq!(chain_contradicted(&next_header(4, ends[2]), 1, &map), None);
        // Nothing recorded (an old header).
        assert_eq!(chain_contradicted(&next_header(4, (0, 0)), 1, &map), None);
        // Another CRC, or another end, for the batch holding position 3.
        let other_crc = (ends[2].0, ends[2].1 ^ 1);
        assert!(chain_contradicted(&next_header(4, other_crc), 1, &map).is_some());
        assert!(chain_contradicted(&next_header(4, (ends[2].0 + 8, ends[2].1 ^ 1)), 1, &map).is_some());
        // The recorded batch, 8 bytes earlier than recorded (bytes lost
        // before it): damage, which tells nothing.
        assert_eq!(
            chain_contradicted(&next_header(4, (ends[2].0 + 8, ends[2].1)), 1, &map),
            None
        );
        // The next segment starts at a position this one holds already,
        // with the recorded batch there or moved.
        assert!(chain_contradicted(&next_header(3, (ends[1].0 + 8, ends[1].1)), 1, &map).is_some());
        assert!(chain_contradicted(&next_header(3, (ends[1].0 + 8, ends[1].1 ^ 1)), 1, &map).is_some());
        // This one lacks its last batches (cut short, or damaged there):
        // nothing tells.
        assert_eq!(chain_contradicted(&next_header(6, (9_999, 7)), 1, &map), None);
        // Damage before the last batch does not hide it.
        let mut damaged = map.clone();
        damaged[SEGMENT_HEADER_BYTES as usize + 30] ^= 0xff;
        assert_eq!(chain_contradicted(&next_header(4, ends[2]), 1, &damaged), None);
        assert!(chain_contradicted(&next_header(4, other_crc), 1, &damaged).is_some());
    }

    /// The index of `map`'s batches (segment 1; each event in a stream of
    /// its own), as the index file would hold it.
    fn index_of(map: &[u8]) -> Index {
        let mut index = Index::default();
        segment::walk_valid_frames(map, SEGMENT_HEADER_BYTES as usize, |step| {
            if let segment::Frame::Valid(at, batch, records) = step {
                for (i, r) in records.iter().enumerate() {
                    let position = batch.first_position + i as u64;
                    let location = crate::index::Location {
                        segment: 1,
                        offset: at as u64 + u64::from(r.offset),
                    };
                    index.push(&format!("s-{position}"), 1, position, location).unwrap();
                }
            }
            std::ops::ControlFlow::Continue(())
        });
        index
    }

    #[test]
    fn a_segment_cut_short_is_damage_where_its_valid_batches_stop() {
        let (map, ends) = segment_of(&[1, 2, 3], 0);
        let index = index_of(&map);
        let next = next_header(4, ends[2]);
        // Whole: no damage.
        assert_eq!(length_damage(&next, &index, 1, &map), None);
        // Cut inside the last batch, or in the first.
        let cut = &map[..ends[2].0 as usize - 5];
        assert_eq!(length_damage(&next, &index, 1, cut).map(|d| d.0), Some(ends[1].0));
        // Cut between two batches: nothing tells it from another copy's
        // shorter segment.
        let cut = &map[..ends[1].0 as usize];
        assert_eq!(length_damage(&next, &index, 1, cut), None);
        let cut = &map[..SEGMENT_HEADER_BYTES as usize + 10];
        assert_eq!(
            length_damage(&next, &index, 1, cut).map(|d| d.0),
            Some(SEGMENT_HEADER_BYTES)
        );
        // Ten bytes lost inside the second batch.
        let mut lost = map.clone();
        lost.drain(ends[0].0 as usize + 20..ends[0].0 as usize + 30);
        assert_eq!(length_damage(&next, &index, 1, &lost).map(|d| d.0), Some(ends[0].0));
        // Bytes added are no cut: the broken chain's reason stands.
        let mut added = map.clone();
        added.splice(ends[0].0 as usize + 20..ends[0].0 as usize + 20, [7u8; 10]);
        assert_eq!(length_damage(&next, &index, 1, &added), None);
        // Without the index file's word on the segment (the segment was
        // replayed, so the index holds only what is left), nothing tells.
        let cut = &map[..ends[2].0 as usize - 5];
        assert_eq!(length_damage(&next, &index_of(cut), 1, cut), None);
        // Another copy's segment, shorter: its own batches contradict the
        // header, or lie elsewhere than the index has them.
        let (other, other_ends) = segment_of(&[1, 2, 3, 4], 0);
        let next = next_header(4, (other_ends[3].0 + 100, 9));
        assert_eq!(length_damage(&next, &index_of(&other), 1, &other), None);
        // (Positions 1 and 2 in one batch: the record of 2 lies elsewhere.)
        let mut paired = vec![1u8; SEGMENT_HEADER_BYTES as usize];
        let event = EventData::new("T", &b"{}"[..]);
        let input = |version| RecordInput {
            stream: "s",
            version,
            event: &event,
        };
        encode_batch(&mut paired, 1, 0, [input(1), input(2)]);
        paired.extend_from_slice(&[5u8; 20]);
        assert!((paired.len() as u64) < ends[2].0);
        assert_eq!(length_damage(&next_header(4, ends[2]), &index, 1, &paired), None);
    }

    #[test]
    fn positions_at_the_end_of_the_range_are_no_panic() {
        let (map, ends) = segment_of(&[u64::MAX - 1, u64::MAX], 0);
        // Valid batches, so that their positions are looked at.
        assert!(frame::check_batch(&map[SEGMENT_HEADER_BYTES as usize..], |_, _| {}).is_ok());
        assert!(frame::check_batch(&map[ends[0].0 as usize..], |_, _| {}).is_ok());
        for first in [0, 1, u64::MAX - 1, u64::MAX] {
            for recorded in [ends[0], ends[1], (1, 1)] {
                let _ = chain_contradicted(&next_header(first, recorded), 1, &map);
            }
        }
    }
}
