//! `annal`: the command-line tool for annal event stores. Inspect a store,
//! script it, move events in and out as JSON lines, verify and repair it.
//! See docs/CLI.md.

#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
#![deny(clippy::print_stderr, clippy::print_stdout)]

/// `eprintln!` that never panics: a message that cannot be written
/// (standard error closed, or a file on a full disk) is dropped, so that
/// the command still does its work and exits with its own status.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod args;
mod commands;
mod expected;
mod fail;
mod input;
mod json;
mod progress;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    ignore_file_size_signal();
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return parser_said(&e),
    };
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.message.is_empty() {
                note!("annal: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}

/// Prints what the argument parser has to say: help or version on stdout
/// (exit code 0, or 1 when stdout cannot take it), a usage error on stderr
/// (exit code 2).
fn parser_said(e: &clap::Error) -> ExitCode {
    let code = u8::try_from(e.exit_code()).unwrap_or(fail::ERROR);
    match e.print() {
        Ok(()) => ExitCode::from(code),
        Err(io) if code == 0 => {
            if io.kind() != std::io::ErrorKind::BrokenPipe {
                note!("annal: cannot write to standard output: {io}");
            }
            ExitCode::from(fail::ERROR)
        }
        Err(_) => ExitCode::from(code),
    }
}

/// A write past the file-size limit (`ulimit -f`) then fails with `EFBIG`,
/// which the command reports (exit code 1, what was appended said), instead
/// of the signal killing it mid-way; as Rust does for `SIGPIPE`.
#[cfg(target_os = "linux")]
fn ignore_file_size_signal() {
    // SAFETY: sets a signal's disposition to "ignore", with no handler to
    // run, at the start of `main` before any other thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

#[cfg(not(target_os = "linux"))]
fn ignore_file_size_signal() {}
