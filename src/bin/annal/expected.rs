//! Expected versions written as text, as the command line and import lines
//! spell them: `any`, `no-stream`, `exists` or a version number.

use annal::ExpectedVersion;

/// Parses an expected version as the command line and import lines spell it.
pub fn expected_version(s: &str) -> Result<ExpectedVersion, String> {
    match s {
        "any" => Ok(ExpectedVersion::Any),
        "no-stream" => Ok(ExpectedVersion::NoStream),
        "exists" => Ok(ExpectedVersion::StreamExists),
        n => version_number(n, "expected version").unwrap_or_else(|| {
            Err(format!(
                "expected version must be any, no-stream, exists or a number, not '{s}'"
            ))
        }),
    }
}

/// An exact expected version written as a number (`text`, called `what`
/// in messages): `None` when `text` is no integer at all (the caller says
/// what is expected), an error for a negative one or one past the largest
/// stream version.
pub fn version_number(text: &str, what: &str) -> Option<Result<ExpectedVersion, String>> {
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if text.strip_prefix('-').is_some_and(digits) {
        return Some(Err(format!("{what} must not be negative, got {text}")));
    }
    if !digits(text) {
        return None;
    }
    let max = annal::limits::STREAM_VERSION_MAX;
    Some(
        text.parse()
            .ok()
            .filter(|&v| v <= max)
            .map(ExpectedVersion::Exact)
            .ok_or_else(|| format!("{what} {text} is too large: a stream version is at most {max}")),
    )
}
