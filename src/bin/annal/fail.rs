//! Failures of a command: the exit code and the one-sentence message.

use std::fmt::Display;
use std::io;

/// Any other error.
pub const ERROR: u8 = 1;
/// Wrong expected version (a concurrency conflict).
pub const CONFLICT: u8 = 3;
/// Corruption detected.
pub const CORRUPTION: u8 = 4;
/// Store locked by another process.
pub const LOCKED: u8 = 5;

/// Why a command failed: exit code and message for stderr (empty for a
/// failure that needs none, such as a closed output pipe).
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

pub type Outcome<T = ()> = Result<T, Failure>;

impl Failure {
    /// A failure with exit code 1.
    pub fn new(message: impl Display) -> Self {
        Failure {
            code: ERROR,
            message: message.to_string(),
        }
    }

    /// A failure to write the summary of `done`, work that is done all the
    /// same (a backup made, a repair that changed the store): the message
    /// says so, so that a script does not take exit 1 for nothing done.
    pub fn summary_lost(self, done: impl Display) -> Self {
        let why = if self.message.is_empty() {
            String::new()
        } else {
            format!(": {}", self.message)
        };
        Failure::new(format!("{done}, but writing its summary failed{why}"))
    }

    /// The same failure, its message prefixed (e.g. with a line number).
    pub fn context(self, prefix: impl Display) -> Self {
        if self.message.is_empty() {
            return self;
        }
        Failure {
            code: self.code,
            message: format!("{prefix}: {}", self.message),
        }
    }
}

/// The exit code for a library error.
pub fn code_of(e: &annal::Error) -> u8 {
    match e {
        annal::Error::WrongExpectedVersion { .. } => CONFLICT,
        annal::Error::Corruption { .. } => CORRUPTION,
        annal::Error::Locked { .. } => LOCKED,
        _ => ERROR,
    }
}

impl From<annal::Error> for Failure {
    fn from(e: annal::Error) -> Self {
        if let annal::Error::Io { source, .. } = &e
            && source.kind() == io::ErrorKind::BrokenPipe
        {
            return broken_pipe();
        }
        Failure {
            code: code_of(&e),
            message: e.to_string(),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            return broken_pipe();
        }
        // Input errors are reported where they happen, with their line:
        // what is left is writing the output.
        Failure::new(format!("writing the output: {e}"))
    }
}

/// The reader of our output went away (`annal read-all DIR | head`): stop
/// quietly, with a failing exit code since not everything was written.
fn broken_pipe() -> Failure {
    Failure {
        code: ERROR,
        message: String::new(),
    }
}
