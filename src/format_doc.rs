//! Ties the layout tables of `docs/FORMAT.md` to the code: each module that
//! writes an on-disk structure has a test comparing its field offsets with
//! the document's table, so neither can change without the other.

/// The format document, as compiled into the tests.
const DOC: &str = include_str!("../docs/FORMAT.md");

/// The fixed-size fields (offset, size) of the first layout table after
/// the heading line `heading` (`### Record (one per event)`, say): the rows
/// whose offset and size are both plain numbers. Rows of variable-length
/// parts (an offset like `32 + n`, an empty size) are skipped.
fn documented_fields(heading: &str) -> Vec<(usize, usize)> {
    let mut lines = DOC.lines().skip_while(|line| line.trim() != heading);
    assert!(lines.next().is_some(), "FORMAT.md has no heading '{heading}'");
    let table = lines
        .skip_while(|line| !line.starts_with("| offset |"))
        .skip(2) // header row and separator
        .take_while(|line| line.starts_with('|'));
    table
        .filter_map(|row| {
            let mut cells = row.split('|').map(str::trim).skip(1);
            let offset = cells.next()?.parse().ok()?;
            let size = cells.next()?.parse().ok()?;
            Some((offset, size))
        })
        .collect()
}

/// Asserts that the table under `heading` lists exactly the fields that
/// start at `offsets` (in order), each running to the next offset and the
/// last to `end`.
pub(crate) fn assert_layout(heading: &str, offsets: &[usize], end: usize) {
    let code: Vec<(usize, usize)> = offsets
        .iter()
        .zip(offsets.iter().skip(1).chain([&end]))
        .map(|(&start, &next)| (start, next - start))
        .collect();
    assert_eq!(
        documented_fields(heading),
        code,
        "docs/FORMAT.md '{heading}' (offset, size) rows differ from the code"
    );
}
